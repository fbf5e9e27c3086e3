"""One training run, computed: training set -> tuning -> backtest -> model -> calibration ->
baselines -> held-out metrics. Nothing here talks to MLflow: :mod:`training.tracking` records the
:class:`TrainingRun` this returns (``training.train.run_training`` does both)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.contract import Tables
from features.health import HealthReference, health_scores, rule_risk
from features.key_events import with_key_events
from features.scorer import ModelScorer
from features.snapshot import CROSS_VALIDATION, Snapshot
from training.artifacts import reference_distributions
from training.calibrator import Calibrator
from training.config import TrainConfig
from training.dataset import TrainingSet, build_training_set, resolve_label
from training.leakage import check_leakage
from training.metrics import classification_metrics, health_backtest, segment_auc
from training.model import ChurnModel, baseline_logistic
from training.splits import Fold, backtest_folds, holdout_fold

Progress = Callable[[str], None]
HEADLINE = ("roc_auc", "pr_auc", "top_decile_lift")
#: Below this many churners among the training rows, and when the config sets no LightGBM
#: settings, the regularisation is chosen on the backtest among these (few churners overfit
#: the default trees).
FEW_CHURNERS = 1000
REGULARISATION: dict[str, dict[str, float]] = {
    "default": {},
    "moderate": {"num_leaves": 7, "min_child_samples": 100, "lambda_l2": 5.0},
    "strong": {"num_leaves": 3, "min_child_samples": 300, "feature_fraction": 0.7,
               "lambda_l2": 10.0},
}


def quiet(_: str) -> None:
    """A progress callback that says nothing."""


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr; yields ``advance()``. Silent when not enabled."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


@dataclass
class FoldOutcome:
    """A model fitted and scored on one time fold, with its baselines."""

    fold: Fold
    model: ChurnModel
    calibrator: Calibrator
    proba: np.ndarray  # calibrated, test rows
    raw: np.ndarray  # uncalibrated, test rows
    logreg: np.ndarray
    health: np.ndarray  # rule-only risk score (100 - health)
    metrics: dict[str, dict[str, float]]
    #: The health inputs' distribution in the fold's training rows.
    reference: HealthReference

    @property
    def scorer(self) -> ModelScorer:
        """The fitted model with its calibration: what serving will score with."""
        return self.model.scorer(self.calibrator.to_dict())


def fit_fold(ts: TrainingSet, fold: Fold, config: TrainConfig, baselines: bool = True
             ) -> FoldOutcome:
    """Fit LightGBM on the fold's training dates (early stopping on its validation dates), calibrate
    on the validation dates, and score the test dates; baselines on the same rows."""
    X, y = ts.X, ts.y  # noqa: N806
    model = ChurnModel(config.lightgbm, categorical=ts.categorical).fit(
        X[fold.train], y[fold.train], eval_set=(X[fold.valid], y[fold.valid]))
    calibrator = Calibrator(config.calibration.method).fit(model.predict_proba(X[fold.valid]),
                                                           y[fold.valid])
    X_test, y_test = X[fold.test], y[fold.test]  # noqa: N806
    reference = HealthReference.fit(X[fold.train])
    scorer = model.scorer(calibrator.to_dict())
    log_odds = scorer.raw_score(scorer.encoder.transform(X_test))
    raw, proba = scorer.uncalibrated(log_odds), scorer.probability(log_odds)
    bins = config.evaluation.ece_bins
    metrics = {"model": classification_metrics(y_test, proba, ece_bins=bins),
               "uncalibrated": classification_metrics(y_test, raw, ece_bins=bins)}
    logreg = health = np.full(len(y_test), np.nan)
    if baselines:
        # Same training dates as the model; the validation dates are held out for it too.
        lr = baseline_logistic(X[fold.train], y[fold.train], ts.categorical, ts.fat_tailed)
        logreg = lr.predict_proba(X_test)[:, 1]
        health = rule_risk(X_test, reference)
        metrics["logreg"] = classification_metrics(y_test, logreg, ece_bins=bins)
        metrics["health_rules"] = classification_metrics(y_test, health, probabilities=False)
    return FoldOutcome(fold, model, calibrator, proba, raw, logreg, health, metrics, reference)


def lift_over(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """How much the model beats a baseline on each headline metric (difference)."""
    return {k: model[k] - baseline[k] for k in HEADLINE
            if k in model and k in baseline and np.isfinite(model[k]) and np.isfinite(baseline[k])}


def dataset_digest(frame: pd.DataFrame) -> str:
    """SHA-256 over every row and column of the training rows (MLflow's own digest samples)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    h = hashlib.sha256(hashed.tobytes())
    h.update(",".join(frame.columns).encode())
    return h.hexdigest()


def _fold_record(outcome: FoldOutcome, as_of: pd.Series) -> dict[str, object]:
    f = outcome.fold
    rec: dict[str, object] = {"test_date": f.name, "train_dates": len(as_of[f.train].unique()),
                              "validation_dates": f.dates(as_of, f.valid),
                              "best_iteration": outcome.model.best_iteration_}
    for prefix, m in outcome.metrics.items():
        for k, v in m.items():
            rec[f"{prefix}_{k}"] = v
    return rec


@dataclass
class TrainingRun:
    """What one run computed, ready to be recorded: the final model on the held-out window, its
    baselines, the backtest and the data it came from.

    A run on a snapshot export (``validation`` = ``"cross-validation"``, made by
    :func:`training.crossval.fit_snapshot`) has no dates: ``backtest`` holds its folds, ``cv``
    their mean and spread, and ``final`` the out-of-fold scores of every row.
    """

    tables: Tables | Snapshot
    config: TrainConfig
    training_set: TrainingSet
    holdout: Fold
    final: FoldOutcome
    backtest: list[dict[str, object]]
    digest: str
    started: float
    tuning: dict[str, object] = field(default_factory=dict)
    #: "time" (observation dates) or "cross-validation" (a snapshot's stratified folds).
    validation: str = "time"
    cv: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def cross_validated(self) -> bool:
        return self.validation == CROSS_VALIDATION

    @property
    def as_of(self) -> pd.Series:
        return self.training_set.frame["as_of"]

    def dates(self, mask: np.ndarray) -> list[str]:
        """The observation dates of a fold's mask, as ``YYYY-MM-DD`` (none for a snapshot)."""
        if self.cross_validated:
            return []
        return self.holdout.dates(self.as_of, mask)

    @property
    def observed_until(self) -> str:
        """The last day churn is known, as ``YYYY-MM-DD`` ("" for a snapshot: no dates)."""
        date = self.training_set.observed_until
        return "" if date is None or pd.isna(date) else f"{date:%Y-%m-%d}"

    @property
    def horizon_days(self) -> int | None:
        """The churn window of the label (a snapshot's only when its mapping says)."""
        if isinstance(self.tables, Snapshot):
            return self.tables.horizon_days
        return self.config.label.horizon_days

    @property
    def X_test(self) -> pd.DataFrame:  # noqa: N802
        return self.training_set.X[self.holdout.test]

    @property
    def y_test(self) -> np.ndarray:
        return self.training_set.y[self.holdout.test]

    @property
    def metrics(self) -> dict[str, float]:
        """The served (calibrated) model's metrics on the held-out window."""
        return self.final.metrics["model"]

    @property
    def lifts(self) -> dict[str, dict[str, float]]:
        m = self.final.metrics
        return {"logreg": lift_over(m["model"], m["logreg"]),
                "health_rules": lift_over(m["model"], m["health_rules"])}

    def segment_auc(self) -> dict[str, dict[str, float]]:
        return segment_auc(self.y_test, self.final.proba, self.X_test,
                           self.config.evaluation.segment_columns)

    def health_backtest(self) -> dict[str, object]:
        y, X, ref = self.y_test, self.X_test, self.final.reference  # noqa: N806
        return {"rules_only": health_backtest(y, health_scores(X, reference=ref)),
                "with_model_risk": health_backtest(y, health_scores(X, self.final.proba,
                                                                    reference=ref))}

    def reference(self) -> dict[str, object]:
        """What the training rows looked like, for drift checks."""
        ts = self.training_set
        return reference_distributions(ts.X[self.holdout.train], ts.categorical)


def _tune(ts: TrainingSet, config: TrainConfig, trials: int, first_test: pd.Timestamp,
          show_progress: bool, progress: Progress) -> dict[str, object]:
    from training.tune import tune_lightgbm

    study = tune_lightgbm(ts, config, trials, before=first_test, show_progress=show_progress)
    config.lightgbm = config.lightgbm.model_copy(update=study.best_params)
    progress(f"tuned over {trials} trials: mean backtest ROC AUC {study.best_value:.3f} with "
             f"{study.best_params}")
    return {"trials": trials, "best_value": study.best_value, "best_params": study.best_params,
            "objective": "mean backtest ROC AUC on dates before the test window"}


def _choose_regularisation(ts: TrainingSet, config: TrainConfig, holdout: Fold,
                           progress: Progress) -> dict[str, object]:
    """With few churners and no LightGBM settings in the config, pick the regularisation with the
    best mean ROC AUC on backtest folds before the test window (they never see it); on data too
    short for one, on the validation dates (trained on the training dates)."""
    s, horizon, as_of = config.split, config.label.horizon_days, ts.frame["as_of"]
    first_test = pd.Timestamp(min(holdout.dates(as_of, holdout.test)))
    folds = backtest_folds(as_of, max(s.backtest_folds, 2), horizon, s.validation_dates,
                           before=first_test)
    if not folds:
        folds = [Fold("validation", holdout.train, holdout.valid, holdout.valid)]
    churners = int(ts.y[as_of < first_test].sum())
    if "lightgbm" in config.model_fields_set or churners >= FEW_CHURNERS:
        return {}
    scores = {}
    for name, update in REGULARISATION.items():
        trial = config.model_copy(update={"lightgbm": config.lightgbm.model_copy(update=update)})
        aucs = [fit_fold(ts, fold, trial, baselines=False).metrics["model"]["roc_auc"]
                for fold in folds]
        scores[name] = float(np.nanmean(aucs))
    best = max(scores, key=lambda k: (scores[k], k == "default"))
    config.lightgbm = config.lightgbm.model_copy(update=REGULARISATION[best])
    progress(f"{churners} churners before the test window: regularisation {best} chosen on the "
             f"backtest ({', '.join(f'{k} {v:.3f}' for k, v in scores.items())} mean ROC AUC)")
    return {"regularisation": best, "backtest_roc_auc": scores}


def fit_run(tables: Tables, config: TrainConfig | None = None, *,
            observed_until: str | None = None, progress: Progress = quiet,
            show_progress: bool = False, tune: int = 0,
            training_set: TrainingSet | None = None, spark: Any = None) -> TrainingRun:
    """Backtest, train, calibrate and evaluate on the latest held-out dates.

    ``tune`` > 0 first runs that many Optuna trials on the backtest folds before the test window.
    ``training_set`` reuses already built training rows (they must come from ``tables`` and
    ``config``'s label settings). ``spark`` (a SparkSession) builds them on Spark.
    """
    started = time.perf_counter()
    config = resolve_label(config or TrainConfig(), tables)
    progress(f"loaded {', '.join(tables.available)} from {tables.source}")
    if training_set is None and not tables.feature_config.key_events:
        tables = with_key_events(tables)
        if tables.feature_config.key_events:
            progress(f"no key events declared: the {len(tables.feature_config.key_events)} most "
                     f"frequent get their own features ({', '.join(tables.feature_config.key_events)})")
    ts = training_set or build_training_set(tables, config, observed_until, spark=spark)
    as_of = ts.frame["as_of"]
    progress(f"built {len(ts.frame):,} training rows over {as_of.nunique()} observation dates "
             f"(churn rate {ts.frame['churned'].mean():.1%})")
    s, horizon = config.split, config.label.horizon_days
    holdout = holdout_fold(as_of, s.test_dates, horizon, s.validation_dates)
    fit_rows = holdout.train | holdout.valid
    check_leakage(ts.X[fit_rows], ts.y[fit_rows], config.features.allow_leaky)
    first_test = pd.Timestamp(min(holdout.dates(as_of, holdout.test)))
    tuning = (_tune(ts, config, tune, first_test, show_progress, progress) if tune > 0
              else _choose_regularisation(ts, config, holdout, progress))

    folds = backtest_folds(as_of, s.backtest_folds, horizon, s.validation_dates)
    backtest: list[dict[str, object]] = []
    with progress_bar(len(folds) + 1, "backtest and final model", show_progress) as advance:
        for fold in folds:
            backtest.append(_fold_record(fit_fold(ts, fold, config), as_of))
            advance()
        final = fit_fold(ts, holdout, config)
        advance()
    if folds:
        mean_auc = np.nanmean([r["model_roc_auc"] for r in backtest])
        progress(f"rolling-origin backtest over {len(folds)} dates: mean ROC AUC {mean_auc:.3f}")
    m = final.metrics
    progress(f"held-out ROC AUC {m['model']['roc_auc']:.3f} (logistic baseline "
             f"{m['logreg']['roc_auc']:.3f}, rule-only health score "
             f"{m['health_rules']['roc_auc']:.3f}); ECE {m['uncalibrated']['ece']:.4f} -> "
             f"{m['model']['ece']:.4f} after {config.calibration.method} calibration")
    return TrainingRun(tables, config, ts, holdout, final, backtest, dataset_digest(ts.frame),
                       started, tuning)
