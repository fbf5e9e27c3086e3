"""Run artifacts computed from the data: reference distributions (for drift checks) and SHAP values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from training.model import ChurnModel


def reference_distributions(X: pd.DataFrame, categorical: list[str], bins: int = 10  # noqa: N803
                            ) -> dict[str, Any]:
    """Per feature, what the training rows looked like: decile edges and the share of rows in each
    bin (numeric) or value shares (categorical), and the missing share. A drift check compares live
    rows against these (e.g. population stability index over the same bins)."""
    out: dict[str, Any] = {"rows": int(len(X)), "features": {}}
    for name in X.columns:
        col = X[name]
        missing = float(col.isna().mean()) if len(col) else 0.0
        if name in categorical:
            shares = col.astype("string").dropna().value_counts(normalize=True)
            out["features"][name] = {"kind": "categorical", "missing_share": missing,
                                     "shares": {str(k): float(v) for k, v in shares.items()}}
            continue
        values = pd.to_numeric(col, errors="coerce").dropna().to_numpy(dtype=float)
        if len(values) == 0:
            out["features"][name] = {"kind": "numeric", "missing_share": missing, "edges": [],
                                     "shares": []}
            continue
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
        # Inner edges only: the outer bins are open so live values outside the range still count.
        inner = edges[1:-1]
        counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
        out["features"][name] = {
            "kind": "numeric", "missing_share": missing, "edges": inner.tolist(),
            "shares": (counts / counts.sum()).tolist(), "mean": float(values.mean()),
            "std": float(values.std()), "min": float(values.min()), "max": float(values.max())}
    return out


def shap_values(model: ChurnModel, X: pd.DataFrame, max_rows: int = 2000, seed: int = 0  # noqa: N803
                ) -> tuple[np.ndarray, np.ndarray]:
    """LightGBM's exact tree SHAP contributions (``pred_contrib``) on at most ``max_rows`` rows.

    Returns ``(contributions, encoded_values)``, both rows x features (the bias column dropped).
    """
    if len(X) > max_rows:
        X = X.sample(max_rows, random_state=seed)  # noqa: N806
    encoded = model.encoder_.transform(X)
    contrib = model.booster_.predict(encoded, pred_contrib=True,
                                     num_iteration=model.best_iteration_)
    return np.asarray(contrib)[:, :-1], encoded
