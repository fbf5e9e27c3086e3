"""Scoring with a trained model: its booster, feature encoder and calibration, applied one way.

A model version is a LightGBM booster (``booster.txt``) and its ``metadata.json``: the
:class:`~features.encoder.FeatureEncoder` and the probability calibration fitted on held-out
dates. :class:`ModelScorer` turns encoded rows into raw scores (log-odds), raw scores into
calibrated churn probabilities, and feature frames into probabilities. The MLflow pyfunc,
``churn evaluate``, the promotion gate, training's own evaluation and the scoring API all call it,
so their probabilities cannot drift apart.

Calibration formats (``metadata["calibration"]``):

* ``{"method": "isotonic", "x": [...], "y": [...]}``: the isotonic step function's thresholds,
  applied by linear interpolation and clipped at the ends (what scikit-learn's
  ``IsotonicRegression(out_of_bounds="clip").predict`` does);
* ``{"method": "sigmoid", "a": A, "b": B}``: Platt scaling on the log-odds,
  ``1 / (1 + exp(-(A * logit(p) + B)))``;
* ``None`` or ``{"method": "none"}``: the probability unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.encoder import FeatureEncoder

#: Probabilities are clipped away from 0 and 1 before taking log-odds.
EPS = 1e-6
#: LightGBM threads per prediction: scoring calls are small and servers run a worker per core.
PREDICT_THREADS = 1
#: A model is not applied to data lacking more than this share of its features.
MAX_ABSENT_SHARE = 0.5


class FeatureCoverageError(ValueError):
    """The data lacks most of the model's features: it is not the data the model was made for."""


def absent_features(frame: pd.DataFrame, names: list[str]) -> list[str]:
    """The model features the frame does not have, or has with no value on any row."""
    return [n for n in names if n not in frame.columns or frame[n].isna().all()]


def check_coverage(frame: pd.DataFrame, names: list[str], model: str, data: str) -> None:
    """Refuse to score ``frame`` when more than :data:`MAX_ABSENT_SHARE` of the model's features
    are absent from it (a model applied to another data set's rows would answer, wrongly)."""
    absent = absent_features(frame, names)
    if len(frame) and len(absent) > MAX_ABSENT_SHARE * len(names):
        raise FeatureCoverageError(
            f"{len(absent)} of the {len(names)} features of {model} are absent from {data} "
            f"({', '.join(absent[:6])}{', ...' if len(absent) > 6 else ''}): it looks like a "
            "model of another data set; choose the model made for this data (--model-name or "
            "--model-uri)")


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def calibrate(proba: np.ndarray, calibration: Mapping[str, Any] | None) -> np.ndarray:
    """Map raw model probabilities through a stored calibration (see the module docstring)."""
    p = np.asarray(proba, dtype=np.float64)
    method = (calibration or {}).get("method", "none")
    if method == "none":
        return p
    if method == "isotonic":
        x = np.asarray(calibration["x"], dtype=np.float64)
        y = np.asarray(calibration["y"], dtype=np.float64)
        return np.interp(p, x, y)
    if method == "sigmoid":
        z = float(calibration["a"]) * logit(p) + float(calibration["b"])
        return 1.0 / (1.0 + np.exp(-z))
    raise ValueError(f"unknown calibration method {method!r}")


def sigmoid_parameter(booster: Any) -> float:
    """LightGBM's ``sigmoid`` of a binary objective (probability = 1 / (1 + e^(-s * raw)))."""
    objective = booster.dump_model(num_iteration=1).get("objective", "")
    match = re.search(r"sigmoid:([0-9.eE+-]+)", objective)
    return float(match.group(1)) if match else 1.0


@dataclass(frozen=True)
class ModelScorer:
    """A booster, the encoder of its input and its calibration: raw scores and probabilities.

    ``num_iteration`` limits the trees used (a model in training keeps the rounds after its best
    one); a saved model holds only the trees it uses.
    """

    booster: Any  # lightgbm.Booster
    encoder: FeatureEncoder
    calibration: Mapping[str, Any] | None = None
    num_iteration: int | None = None
    sigmoid: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigmoid", sigmoid_parameter(self.booster))

    @classmethod
    def from_files(cls, booster_path: str | Path, metadata: Mapping[str, Any]) -> ModelScorer:
        """The scorer of a saved model: ``booster.txt`` and its parsed ``metadata.json``."""
        import lightgbm as lgb

        return cls(lgb.Booster(model_file=str(booster_path)),
                   FeatureEncoder.from_dict(metadata["encoder"]), metadata.get("calibration"))

    @property
    def calibrated(self) -> bool:
        return (self.calibration or {}).get("method", "none") != "none"

    def raw_score(self, matrix: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds) of rows encoded by :attr:`encoder`."""
        return np.asarray(self.booster.predict(matrix, raw_score=True, num_threads=PREDICT_THREADS,
                                               num_iteration=self.num_iteration),
                          dtype=np.float64)

    def uncalibrated(self, raw: np.ndarray) -> np.ndarray:
        """The booster's own probabilities of raw scores."""
        return 1.0 / (1.0 + np.exp(-self.sigmoid * np.asarray(raw, dtype=np.float64)))

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities (0-1) of raw scores."""
        return np.clip(calibrate(self.uncalibrated(raw), self.calibration), 0.0, 1.0)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability of each row of a feature frame (absent features and
        unknown categories are missing values)."""
        return self.probability(self.raw_score(self.encoder.transform(frame)))
