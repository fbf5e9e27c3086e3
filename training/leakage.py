"""The leakage guard: a feature that alone separates churners from the others almost perfectly on
the training rows is almost always written at or after the churn (a cancellation date, a
"complaint" flag filled in by the exit interview), not a signal the service will have in time.
Such a feature stops the run, named, unless the training config keeps it deliberately."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

#: A single feature at or above this ROC AUC (either direction) on the training rows stops a run.
LEAKY_AUC = 0.98


class LeakageError(ValueError):
    """A feature carries the label; the message names it and how to keep it deliberately."""


def single_feature_auc(values: pd.Series, y: np.ndarray) -> float:
    """How well one feature alone separates the classes: ROC AUC of its values (a category by
    its churn rate on these rows), in the better of the two directions; missing is its own
    value. NaN when the rows hold one class only."""
    if len(np.unique(y)) < 2:
        return float("nan")
    if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
        codes = values.astype("string").fillna("<missing>")
        score = codes.map(pd.Series(y, index=values.index).groupby(codes).mean()).to_numpy(float)
    else:
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(float)
        fill = np.nanmin(numeric) - 1 if np.isfinite(numeric).any() else 0.0
        score = np.where(np.isnan(numeric), fill, numeric)
    auc = float(roc_auc_score(y, score))
    return max(auc, 1.0 - auc)


def check_leakage(X: pd.DataFrame, y: np.ndarray, allowed: list[str] = ()) -> dict[str, float]:  # noqa: N803
    """The single-feature ROC AUC of every feature of ``X`` on rows labelled ``y``; raises
    :class:`LeakageError` naming each feature at or above :data:`LEAKY_AUC` that is not in
    ``allowed``."""
    aucs = {name: single_feature_auc(X[name], y) for name in X.columns}
    leaky = {n: a for n, a in aucs.items() if a >= LEAKY_AUC and n not in allowed}
    if leaky:
        named = ", ".join(f"{n} (ROC AUC {a:.3f})" for n, a in sorted(leaky.items()))
        raise LeakageError(
            f"{named} alone separate{'s' if len(leaky) == 1 else ''} churners from the others "
            "almost perfectly on the training rows: such a column is usually written at or after "
            "the churn (a cancellation date, a complaint or exit-survey field) and will not be "
            "known in time for a prediction. Leave it out (features.exclude in the training "
            f"config) or keep it deliberately with features.allow_leaky: [{', '.join(leaky)}]")
    return aucs
