"""Fitting the probability calibration on held-out dates (applied by ``features.scorer``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.scorer import calibrate, logit


class Calibrator:
    """Isotonic or sigmoid (Platt) calibration of churn probabilities.

    Fit it on predictions for dates the model did not train on; ``to_dict`` gives the plain
    numbers stored in the model's metadata and applied by ``features.scorer.calibrate``.
    """

    def __init__(self, method: str = "isotonic"):
        self.method = method

    def fit(self, proba: np.ndarray, y: np.ndarray) -> Calibrator:
        proba, y = np.asarray(proba, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if self.method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba, y)
            self.params_: dict[str, Any] = {"method": "isotonic",
                                            "x": iso.X_thresholds_.tolist(),
                                            "y": iso.y_thresholds_.tolist()}
        elif self.method == "sigmoid":
            # Nearly unregularised: two parameters on thousands of rows.
            lr = LogisticRegression(C=1e6).fit(logit(proba)[:, None], y)
            self.params_ = {"method": "sigmoid", "a": float(lr.coef_[0, 0]),
                            "b": float(lr.intercept_[0])}
        elif self.method == "none":
            self.params_ = {"method": "none"}
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        self.params_["fitted_rows"] = int(len(y))
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        return calibrate(proba, self.params_)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.params_)
