"""Applying a fitted probability calibration: a pure function shared by training and serving.

Training fits the calibration on held-out dates and stores it as plain numbers in the model's
``metadata.json`` under ``"calibration"``; anything that scores with the booster (the MLflow pyfunc,
the API) passes the booster's raw probability through :func:`calibrate` so that every consumer
serves the same calibrated probability. Formats:

* ``{"method": "isotonic", "x": [...], "y": [...]}`` -- the isotonic step function's thresholds,
  applied by linear interpolation and clipped at the ends (what scikit-learn's
  ``IsotonicRegression(out_of_bounds="clip").predict`` does).
* ``{"method": "sigmoid", "a": A, "b": B}`` -- Platt scaling on the log-odds:
  ``1 / (1 + exp(-(A * logit(p) + B)))``.
* ``None`` or ``{"method": "none"}`` -- the probability unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Probabilities are clipped away from 0 and 1 before taking log-odds.
EPS = 1e-6


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
