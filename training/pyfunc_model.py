"""The MLflow pyfunc logged for every model version ("models from code").

MLflow stores this file with the model, and ships the ``features`` package with it
(``code_paths``), so ``mlflow models serve`` and ``mlflow.pyfunc.spark_udf`` load it without the
training code. It returns calibrated churn probabilities (``features.calibration`` applied to the
booster's output, exactly as the API does), never labels.
"""

from __future__ import annotations

import json

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from features.calibration import calibrate
from features.modelframe import FeatureEncoder


class ChurnRiskModel(PythonModel):
    """Wraps the LightGBM booster and the feature encoder saved beside it."""

    def load_context(self, context) -> None:
        with open(context.artifacts["metadata"]) as fh:
            self.metadata = json.load(fh)
        self.encoder = FeatureEncoder.from_dict(self.metadata["encoder"])
        self.booster = lgb.Booster(model_file=context.artifacts["booster"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Calibrated churn probability (0-1) for each row of feature values."""
        raw = self.booster.predict(self.encoder.transform(pd.DataFrame(model_input)), num_threads=1)
        return calibrate(raw, self.metadata.get("calibration"))


mlflow.models.set_model(ChurnRiskModel())
