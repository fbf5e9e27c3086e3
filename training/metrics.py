"""Model quality metrics for churn scores: ranking, calibration, segments and health bands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from features.health import DEFAULT_HEALTH_BANDS, band_labels


def top_decile_lift(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Churn rate among the 10 % highest-scored accounts divided by the overall churn rate."""
    y_true = np.asarray(y_true, dtype=float)
    base = y_true.mean() if len(y_true) else 0.0
    if base == 0:
        return float("nan")
    k = max(1, int(np.ceil(0.1 * len(y_true))))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(y_true[top].mean() / base)


def calibration_bins(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate in equal-count bins of the predicted probability.

    Equal-count (not equal-width) bins: churn probabilities crowd near zero, so equal-width bins
    would put almost every account into the first bin and hide the miscalibration.
    """
    frame = pd.DataFrame({"y": np.asarray(y_true, dtype=float),
                          "p": np.asarray(proba, dtype=float)})
    p = frame["p"].to_numpy()
    # Quantile edges; equal predictions always share a bin (a constant score is one bin).
    edges = np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1]) if len(p) else np.array([])
    labels = np.searchsorted(np.unique(edges), p, side="left")
    return (frame.assign(bin=labels).groupby("bin")
            .agg(predicted=("p", "mean"), observed=("y", "mean"), rows=("y", "size"))
            .reset_index())


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |observed - predicted| over equal-count bins."""
    if len(y_true) == 0:
        return float("nan")
    table = calibration_bins(y_true, proba, bins)
    return float(np.average(np.abs(table["observed"] - table["predicted"]), weights=table["rows"]))


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, *,
                           probabilities: bool = True, ece_bins: int = 10) -> dict[str, float]:
    """ROC AUC, PR AUC, top-decile lift, churn rate and row count; Brier score and expected
    calibration error too when ``scores`` are probabilities."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    out = {"rows": float(len(y_true)), "churn_rate": float(np.mean(y_true)) if len(y_true) else 0.0}
    if probabilities and len(y_true):
        out["brier"] = float(brier_score_loss(y_true, scores))
        out["ece"] = expected_calibration_error(y_true, scores, ece_bins)
        out["mean_predicted"] = float(np.mean(scores))
    if len(np.unique(y_true)) < 2:
        # AUCs are undefined with a single class; say so instead of crashing the run.
        out.update(roc_auc=float("nan"), pr_auc=float("nan"), top_decile_lift=float("nan"))
        return out
    out["roc_auc"] = float(roc_auc_score(y_true, scores))
    out["pr_auc"] = float(average_precision_score(y_true, scores))
    out["top_decile_lift"] = top_decile_lift(y_true, scores)
    return out


def segment_auc(y_true: np.ndarray, scores: np.ndarray, frame: pd.DataFrame,
                columns: Sequence[str], min_rows: int = 50) -> dict[str, dict[str, float]]:
    """ROC AUC per value of each segment column (``{"segment": {"SMB": 0.78, ...}}``).

    Segments with fewer than ``min_rows`` rows or a single class are left out: their AUC would be
    noise or undefined.
    """
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=float)
    out: dict[str, dict[str, float]] = {}
    for col in columns:
        if col not in frame.columns:
            continue
        values = frame[col].astype("string").fillna("(missing)").to_numpy()
        per: dict[str, float] = {}
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() >= min_rows and len(np.unique(y_true[mask])) == 2:
                per[str(value)] = float(roc_auc_score(y_true[mask], scores[mask]))
        if per:
            out[col] = per
    return out


def health_backtest(y_true: np.ndarray, health: np.ndarray,
                    bands: Mapping[str, float] = DEFAULT_HEALTH_BANDS) -> dict[str, object]:
    """Churn rate per health band and how many churners were green (healthy) when observed."""
    y_true = np.asarray(y_true, dtype=int)
    ordered = sorted(bands.items(), key=lambda kv: -kv[1])
    names = np.array([b or "no data" for b in band_labels(health, bands)], dtype=object)
    per_band = {}
    for name in [n for n, _ in ordered] + ["no data"]:
        mask = names == name
        if mask.any():
            per_band[name] = {"accounts": int(mask.sum()), "churners": int(y_true[mask].sum()),
                              "churn_rate": float(y_true[mask].mean())}
    best = ordered[0][0]
    churners = int(y_true.sum())
    green_churners = int(y_true[names == best].sum())
    return {"bands": per_band, "churners": churners, f"{best}_churners": green_churners,
            f"{best}_churner_share": (green_churners / churners) if churners else float("nan")}


#: A held-out ROC AUC at or below this ranks accounts hardly better than at random.
CHANCE_ROC_AUC = 0.55


def quality_warnings(model: dict[str, float], logistic: dict[str, float]) -> list[str]:
    """What a user must know before trusting a model's held-out figures: ranking close to chance,
    or a logistic regression on the same columns ranking better."""
    auc, lr = model.get("roc_auc", float("nan")), logistic.get("roc_auc", float("nan"))
    if not np.isfinite(auc):
        return []
    if auc <= CHANCE_ROC_AUC:
        return [f"held-out ROC AUC {auc:.3f} is close to chance (0.5): the features carry little "
                "churn signal in this data, so the scores rank accounts hardly better than at "
                "random; check the churn definition and the mapping before acting on them"]
    if np.isfinite(lr) and lr > auc:
        return [f"the logistic-regression baseline ranks the held-out accounts better ({lr:.3f} "
                f"against {auc:.3f}): with this little data or signal, try --tune or a stronger "
                "regularisation (docs/training.md)"]
    return []
