"""PNG plots for every run: ROC, precision-recall, calibration (before/after), lift, SHAP."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from training.metrics import calibration_bins


def _pyplot():
    # Chosen when plotting, not at import: importing training must not change a notebook's backend.
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def roc_plot(y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path) -> Path:
    """ROC curves of the model and its baselines on the same rows."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        from sklearn.metrics import auc

        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test window")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def pr_plot(y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, label=name)
    ax.axhline(np.mean(y), ls="--", c="grey", lw=1, label="churn rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test window")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def calibration_plot(y: np.ndarray, probas: Mapping[str, np.ndarray], path: Path,
                     bins: int = 10) -> Path:
    """Observed vs predicted churn rate per equal-count bin, e.g. before and after calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, p in probas.items():
        table = calibration_bins(y, p, bins)
        ax.plot(table["predicted"], table["observed"], marker="o", label=name)
        top = max(top, table["predicted"].max(), table["observed"].max())
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=1, label="perfect")
    ax.set(xlabel="mean predicted churn probability", ylabel="observed churn rate",
           title="Calibration, test window")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def lift_plot(y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path) -> Path:
    """Cumulative lift: churn rate in the top k % of scores over the overall churn rate."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    y = np.asarray(y, dtype=float)
    share = np.arange(1, len(y) + 1) / len(y)
    for name, s in scores.items():
        order = np.argsort(-np.asarray(s), kind="stable")
        cum_rate = np.cumsum(y[order]) / np.arange(1, len(y) + 1)
        ax.plot(share * 100, cum_rate / max(y.mean(), 1e-12), label=name)
    ax.axhline(1.0, ls="--", c="grey", lw=1)
    ax.set(xlabel="top % of accounts by score", ylabel="lift", xlim=(0, 100),
           title="Cumulative lift, test window")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def importance_plot(importance: pd.Series, path: Path, top: int = 20) -> Path:
    plt = _pyplot()
    imp = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(imp) + 1))
    ax.barh(imp.index, imp.values)
    ax.set(xlabel="total gain", title="LightGBM feature importance")
    return _save(fig, path)


def shap_summary_plot(contrib: np.ndarray, values: np.ndarray, names: list[str], path: Path,
                      top: int = 15, seed: int = 0) -> Path:
    """A beeswarm-style SHAP summary: one row per feature (largest mean |SHAP| on top), each dot
    an account, coloured by the feature's value rank (blue low, red high, grey missing)."""
    plt = _pyplot()
    mean_abs = np.abs(contrib).mean(axis=0)
    order = np.argsort(-mean_abs)[:top][::-1]
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(order) + 1.2))
    for row, j in enumerate(order):
        v = values[:, j]
        rank = pd.Series(v).rank(pct=True).to_numpy()
        colors = np.where(np.isnan(v)[:, None], [[0.6, 0.6, 0.6, 0.5]],
                          plt.cm.coolwarm(np.nan_to_num(rank, nan=0.5)))
        ax.scatter(contrib[:, j], row + rng.uniform(-0.3, 0.3, len(v)), s=4, c=colors)
    ax.set_yticks(range(len(order)), [names[j] for j in order])
    ax.axvline(0, c="grey", lw=1)
    ax.set(xlabel="SHAP value (log-odds contribution to churn)", title="SHAP summary, test window")
    return _save(fig, path)
