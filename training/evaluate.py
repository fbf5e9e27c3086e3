"""Model quality metrics for churn scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def top_decile_lift(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Churn rate among the 10 % highest-scored accounts divided by the overall churn rate."""
    y_true = np.asarray(y_true, dtype=float)
    base = y_true.mean()
    if base == 0:
        return float("nan")
    k = max(1, int(np.ceil(0.1 * len(y_true))))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(y_true[top].mean() / base)


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, top-decile lift, churn rate and row count."""
    y_true = np.asarray(y_true)
    out = {"rows": float(len(y_true)), "churn_rate": float(np.mean(y_true)) if len(y_true) else 0.0}
    if len(np.unique(y_true)) < 2:
        # AUCs are undefined with a single class; say so instead of crashing the run.
        out.update(roc_auc=float("nan"), pr_auc=float("nan"), top_decile_lift=float("nan"))
        return out
    out["roc_auc"] = float(roc_auc_score(y_true, scores))
    out["pr_auc"] = float(average_precision_score(y_true, scores))
    out["top_decile_lift"] = top_decile_lift(y_true, scores)
    return out
