"""The MLflow pyfunc logged for every model version ("models from code").

MLflow stores this file with the model, and ships the ``features`` package with it
(``code_paths``), so ``mlflow models serve`` and ``mlflow.pyfunc.spark_udf`` load it without the
training code. It returns calibrated churn probabilities from :class:`features.scorer.ModelScorer`,
the scorer the API and ``churn evaluate`` use, never labels.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from features.scorer import ModelScorer


class ChurnRiskModel(PythonModel):
    """Wraps the LightGBM booster, its feature encoder and calibration saved beside it."""

    def load_context(self, context) -> None:
        with open(context.artifacts["metadata"]) as fh:
            self.metadata = json.load(fh)
        self.scorer = ModelScorer.from_files(context.artifacts["booster"], self.metadata)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Calibrated churn probability (0-1) for each row of feature values."""
        return self.scorer.predict(pd.DataFrame(model_input))


mlflow.models.set_model(ChurnRiskModel())
