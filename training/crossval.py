"""Training on a snapshot export (:mod:`features.snapshot`): stratified k-fold cross-validation,
then the final model on every row.

A snapshot has no dates, so there is no time split: each of ``k`` stratified folds is tested on
once, with the model fitted on the others (early stopping and calibration on one more fold of
them), and the logistic regression on the same columns fitted on the same rows
(:func:`training.run.fit_fold` does both, as for a time fold). The cross-validated figures are
the headline; the final model is fitted on every row with the median number of boosting rounds
the folds kept, and calibrated on the folds' out-of-fold scores. The run it returns is recorded,
registered and gated by :mod:`training.tracking` like any other.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.model_selection import StratifiedKFold

from features.health import HealthReference
from features.snapshot import CROSS_VALIDATION, Snapshot
from training.calibrator import Calibrator
from training.config import TrainConfig
from training.dataset import TrainingSet
from training.leakage import LeakageError, check_leakage
from training.metrics import classification_metrics
from training.model import ChurnModel
from training.run import FoldOutcome, Progress, TrainingRun, dataset_digest, fit_fold, quiet
from training.splits import Fold

#: The metrics of the cross-validation table (per fold, then mean and standard deviation).
HEADLINE = ("roc_auc", "pr_auc")


def snapshot_training_set(snapshot: Snapshot, config: TrainConfig) -> TrainingSet:
    """The snapshot's rows as training rows (no observation dates: one row per account)."""
    names = config.features.select(snapshot.feature_names)
    keep = set(names)
    return TrainingSet(snapshot.frame, names, observed_until=None,  # type: ignore[arg-type]
                       categorical=[c for c in snapshot.categorical if c in keep],
                       catalogue=[r for r in snapshot.catalogue() if r["name"] in keep],
                       fat_tailed=[])


def cv_folds(y: np.ndarray, k: int, seed: int) -> list[Fold]:
    """``k`` stratified folds; each tests on one part, stops early and calibrates on the next
    part and trains on the rest."""
    parts = [test for _, test in StratifiedKFold(k, shuffle=True, random_state=seed)
             .split(np.zeros(len(y)), y)]
    folds = []
    for i, test_idx in enumerate(parts):
        test = np.zeros(len(y), bool)
        test[test_idx] = True
        valid = np.zeros(len(y), bool)
        valid[parts[(i + 1) % k]] = True
        folds.append(Fold(f"fold {i + 1}", ~(test | valid), valid, test))
    return folds


def _record(outcome: FoldOutcome) -> dict[str, object]:
    f = outcome.fold
    rec: dict[str, object] = {"fold": f.name, "train_rows": int(f.train.sum()),
                              "validation_rows": int(f.valid.sum()),
                              "test_rows": int(f.test.sum()),
                              "best_iteration": outcome.model.best_iteration_}
    for prefix, m in outcome.metrics.items():
        for k, v in m.items():
            rec[f"{prefix}_{k}"] = v
    return rec


def cv_summary(records: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over the folds of the model's and the logistic
    regression's headline metrics: ``{"model_roc_auc": {"mean": .., "std": ..}, ...}``."""
    out = {}
    for who in ("model", "logreg"):
        for metric in HEADLINE:
            values = np.array([float(r[f"{who}_{metric}"]) for r in records])  # type: ignore[arg-type]
            out[f"{who}_{metric}"] = {"mean": float(np.nanmean(values)),
                                      "std": float(np.nanstd(values))}
    return out


def fit_snapshot(snapshot: Snapshot, config: TrainConfig | None = None, *,
                 progress: Progress = quiet) -> TrainingRun:
    """Cross-validate LightGBM and the logistic regression on ``snapshot``, then fit the final
    model on every row (see the module docstring).

    Raises:
        LeakageError: a column alone separates the label almost perfectly.
    """
    started = time.perf_counter()
    config = (config or TrainConfig()).model_copy(deep=True)
    config.model_name = config.model_name or snapshot.name
    if snapshot.horizon_days is not None and "horizon_days" not in config.label.model_fields_set:
        config.label.horizon_days = snapshot.horizon_days
    ts = snapshot_training_set(snapshot, config)
    X, y = ts.X, ts.y  # noqa: N806
    progress(f"loaded the snapshot {', '.join(snapshot.files)}: {len(y):,} accounts, "
             f"{len(ts.feature_names)} features, churn rate {y.mean():.1%}")
    try:
        check_leakage(X, y, config.features.allow_leaky)
    except LeakageError as exc:
        raise LeakageError(f"{exc}, or leave its column out under the mapping's snapshot.drop "
                           "with the reason") from exc
    k = snapshot.folds
    outcomes = [fit_fold(ts, fold, config) for fold in cv_folds(y, k, config.lightgbm.seed)]
    records = [_record(o) for o in outcomes]
    summary = cv_summary(records)
    progress(f"stratified {k}-fold cross-validation: ROC AUC "
             f"{summary['model_roc_auc']['mean']:.3f} ± {summary['model_roc_auc']['std']:.3f} "
             f"(logistic regression on the same columns "
             f"{summary['logreg_roc_auc']['mean']:.3f} ± {summary['logreg_roc_auc']['std']:.3f})")

    every = np.ones(len(y), bool)
    oof = {name: np.full(len(y), np.nan) for name in ("proba", "raw", "logreg", "health")}
    for o in outcomes:
        for name in oof:
            oof[name][o.fold.test] = getattr(o, name)
    rounds = int(np.median([o.model.best_iteration_ for o in outcomes]))
    final_params = config.lightgbm.model_copy(update={"num_boost_round": max(rounds, 1)})
    model = ChurnModel(final_params, categorical=ts.categorical).fit(X, y)
    calibrator = Calibrator(config.calibration.method).fit(oof["raw"], y)
    bins = config.evaluation.ece_bins
    metrics = {"model": classification_metrics(y, oof["proba"], ece_bins=bins),
               "uncalibrated": classification_metrics(y, oof["raw"], ece_bins=bins),
               "logreg": classification_metrics(y, oof["logreg"], ece_bins=bins),
               "health_rules": classification_metrics(y, oof["health"], probabilities=False)}
    final = FoldOutcome(Fold(CROSS_VALIDATION, every, np.zeros(len(y), bool), every), model,
                        calibrator, oof["proba"], oof["raw"], oof["logreg"], oof["health"],
                        metrics, HealthReference.fit(X))
    progress(f"final model on all {len(y):,} accounts: {rounds} boosting rounds (the folds' "
             f"median), calibrated on the out-of-fold scores")
    return TrainingRun(snapshot, config, ts, final.fold, final, records,  # type: ignore[arg-type]
                       dataset_digest(ts.frame), started, validation=CROSS_VALIDATION,
                       cv=summary)
