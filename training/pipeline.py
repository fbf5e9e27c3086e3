"""One training run end to end: data -> training set -> backtest -> model -> calibration ->
baselines -> MLflow (params, metrics, lineage, plots, model) -> registry and the promotion gate."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.models import infer_signature
from mlflow.types import ColSpec, DataType, Schema

from features.builder import build_features
from features.contract import Tables, load_tables
from features.labels import scoring_observations
from training import plots
from training.artifacts import reference_distributions, shap_values
from training.calibrate import Calibrator
from training.config import LabelSettings, TrainConfig
from training.evaluate import (
    classification_metrics,
    health_backtest,
    health_rule_risk,
    health_scores,
    segment_auc,
)
from training.promotion import gate
from training.registry import ensure_experiment, log_and_register, tracking_uri
from training.train import (
    ChurnModel,
    Fold,
    TrainingSet,
    backtest_folds,
    baseline_logistic,
    build_training_set,
    holdout_fold,
    resolve_label,
)

Progress = Callable[[str], None]
HEADLINE = ("roc_auc", "pr_auc", "top_decile_lift")


@dataclass
class TrainResult:
    """What a training run produced (``churn train --json`` prints this).

    ``metrics`` are those of the probabilities the model serves (calibrated) on the held-out test
    window; ``baseline_metrics`` the logistic regression's and ``health_baseline_metrics`` the
    rule-only health score's on the same rows.
    """

    run_id: str
    model_name: str
    model_version: str
    model_uri: str
    tracking_uri: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    train_rows: int
    test_rows: int
    train_dates: list[str]
    test_dates: list[str]
    observed_until: str
    seconds: float
    top_features: list[str] = field(default_factory=list)
    uncalibrated_metrics: dict[str, float] = field(default_factory=dict)
    health_baseline_metrics: dict[str, float] = field(default_factory=dict)
    lift_over_baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    validation_dates: list[str] = field(default_factory=list)
    best_iteration: int = 0
    calibration: dict[str, object] = field(default_factory=dict)
    segment_auc: dict[str, dict[str, float]] = field(default_factory=dict)
    health_backtest: dict[str, object] = field(default_factory=dict)
    backtest: list[dict[str, object]] = field(default_factory=list)
    promotion: dict[str, object] = field(default_factory=dict)
    dataset_digest: str = ""
    tuning: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _quiet(_: str) -> None:
    pass


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


def fit_fold(ts: TrainingSet, fold: Fold, config: TrainConfig, baselines: bool = True
             ) -> FoldOutcome:
    """Fit LightGBM on the fold's training dates (early stopping on its validation dates), calibrate
    on the validation dates, and score the test dates; baselines on the same rows."""
    X, y = ts.X, ts.y  # noqa: N806
    model = ChurnModel(config.lightgbm, categorical=ts.categorical).fit(X[fold.train], y[fold.train],
                                            eval_set=(X[fold.valid], y[fold.valid]))
    calibrator = Calibrator(config.calibration.method).fit(model.predict_proba(X[fold.valid]),
                                                           y[fold.valid])
    X_test, y_test = X[fold.test], y[fold.test]  # noqa: N806
    raw = model.predict_proba(X_test)
    proba = calibrator.transform(raw)
    bins = config.evaluation.ece_bins
    metrics = {"model": classification_metrics(y_test, proba, ece_bins=bins),
               "uncalibrated": classification_metrics(y_test, raw, ece_bins=bins)}
    logreg = health = np.full(len(y_test), np.nan)
    if baselines:
        # Same training dates as the model; the validation dates are held out for it too.
        lr = baseline_logistic(X[fold.train], y[fold.train], ts.categorical, ts.fat_tailed)
        logreg = lr.predict_proba(X_test)[:, 1]
        health = health_rule_risk(X_test)
        metrics["logreg"] = classification_metrics(y_test, logreg, ece_bins=bins)
        metrics["health_rules"] = classification_metrics(y_test, health, probabilities=False)
    return FoldOutcome(fold, model, calibrator, proba, raw, logreg, health, metrics)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


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


def run_training(data: str | Path | Tables, config: TrainConfig | None = None, *,
                 tracking: str | None = None, observed_until: str | None = None,
                 progress: Progress = _quiet, show_progress: bool = False,
                 tune: int = 0, training_set: TrainingSet | None = None) -> TrainResult:
    """Backtest, train, calibrate and evaluate on the latest held-out dates, log everything to
    MLflow, register the model as ``challenger`` and promote it to ``champion`` if it passes the gate.

    ``tune`` > 0 first runs that many Optuna trials on the backtest folds before the test window.
    ``training_set`` reuses already built training rows (they must come from ``data`` and
    ``config``'s label settings).
    """
    started = time.perf_counter()
    tables = data if isinstance(data, Tables) else load_tables(data)
    config = resolve_label(config or TrainConfig(), tables)
    progress(f"loaded {', '.join(tables.available)} from {tables.source}")
    ts = training_set or build_training_set(tables, config, observed_until)
    as_of = ts.frame["as_of"]
    progress(f"built {len(ts.frame):,} training rows over {as_of.nunique()} observation dates "
             f"(churn rate {ts.frame['churned'].mean():.1%})")
    s = config.split
    holdout = holdout_fold(as_of, s.test_dates, config.label.horizon_days, s.validation_dates)
    first_test = pd.Timestamp(min(holdout.dates(as_of, holdout.test)))

    tuning: dict[str, object] = {}
    if tune > 0:
        from training.tune import tune_lightgbm

        study = tune_lightgbm(ts, config, tune, before=first_test, show_progress=show_progress)
        config.lightgbm = config.lightgbm.model_copy(update=study.best_params)
        tuning = {"trials": tune, "best_value": study.best_value, "best_params": study.best_params,
                  "objective": "mean backtest ROC AUC on dates before the test window"}
        progress(f"tuned over {tune} trials: mean backtest ROC AUC {study.best_value:.3f} with "
                 f"{study.best_params}")

    folds = backtest_folds(as_of, s.backtest_folds, config.label.horizon_days, s.validation_dates)
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

    X_test, y_test = ts.X[holdout.test], ts.y[holdout.test]  # noqa: N806
    metrics, baseline = final.metrics["model"], final.metrics["logreg"]
    health_metrics, uncalibrated = final.metrics["health_rules"], final.metrics["uncalibrated"]
    lifts = {"logreg": lift_over(metrics, baseline), "health_rules": lift_over(metrics, health_metrics)}
    segments = segment_auc(y_test, final.proba, X_test, config.evaluation.segment_columns)
    health_bt = {"rules_only": health_backtest(y_test, health_scores(X_test)),
                 "with_model_risk": health_backtest(y_test, health_scores(X_test, final.proba))}
    progress(f"held-out ROC AUC {metrics['roc_auc']:.3f} (logistic baseline "
             f"{baseline['roc_auc']:.3f}, rule-only health score {health_metrics['roc_auc']:.3f}); "
             f"ECE {uncalibrated['ece']:.4f} -> {metrics['ece']:.4f} after "
             f"{config.calibration.method} calibration")

    uri = tracking_uri(tracking)
    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment(config.experiment_name, uri)
    digest = dataset_digest(ts.frame)
    model = final.model
    with mlflow.start_run(experiment_id=experiment_id) as run, \
            tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        run_id = run.info.run_id
        mlflow.log_params({
            "horizon_days": config.label.horizon_days, "grace_days": config.label.grace_days,
            "observation_frequency": config.label.frequency,
            "test_dates": s.test_dates, "validation_dates": s.validation_dates,
            "backtest_folds": s.backtest_folds, "observed_until": f"{ts.observed_until:%Y-%m-%d}",
            "calibration": config.calibration.method, "promotion_metric": config.promotion.metric,
            "promotion_margin": config.promotion.margin, "tune_trials": tune,
            "data_source": tables.source, "tables": ",".join(tables.available),
            "features": len(ts.feature_names), "best_iteration": model.best_iteration_,
            **{f"lgbm_{k}": v for k, v in config.lightgbm.model_dump().items()},
        })
        mlflow.set_tags({"dataset_sha256": digest,
                         "test_window": ",".join(holdout.dates(as_of, holdout.test))})
        _log_lineage(ts, holdout, tables.source, digest)
        for prefix, m in (("test", metrics), ("test_uncalibrated", uncalibrated),
                          ("baseline_logreg_test", baseline), ("baseline_health_test", health_metrics)):
            mlflow.log_metrics({f"{prefix}_{k}": v for k, v in _finite(m).items()})
        for name, lift in lifts.items():
            mlflow.log_metrics({f"lift_over_{name}_{k}": v for k, v in lift.items()})
        mlflow.log_metric("train_rows", float(holdout.train.sum()))
        for step, rec in enumerate(backtest):
            mlflow.log_metrics({f"backtest_{k}": float(v) for k, v in rec.items()
                                if isinstance(v, int | float) and np.isfinite(v)}, step=step)
        if backtest:
            table = pd.DataFrame(backtest)
            means = table.select_dtypes("number").mean()
            mlflow.log_metrics({f"backtest_mean_{k}": float(v) for k, v in means.items()
                                if np.isfinite(v)})
            mlflow.log_table(table.astype({"validation_dates": str}), "backtest.json")
        mlflow.log_dict(segments, "segment_auc.json")
        mlflow.log_dict(health_bt, "health_backtest.json")
        mlflow.log_dict(final.calibrator.to_dict(), "calibration.json")
        mlflow.log_dict(ts.catalogue, "feature_catalogue.json")
        importance = model.feature_importance()
        mlflow.log_dict({k: float(v) for k, v in importance.items()}, "feature_importance.json")
        progress("plotting, SHAP values and reference distributions")
        _log_plots(tmp, y_test, final, importance, X_test)
        reference = reference_distributions(ts.X[holdout.train], ts.categorical)
        ref_path = tmp / "reference_distributions.json"
        ref_path.write_text(json.dumps(reference))
        mlflow.log_artifact(str(ref_path))

        progress("logging and registering the model")
        booster_path = tmp / "booster.txt"
        model.booster_.save_model(str(booster_path), num_iteration=model.best_iteration_)
        dates = lambda mask: holdout.dates(as_of, mask)  # noqa: E731
        metadata = {
            "model_name": config.model_name,
            "encoder": model.encoder_.to_dict(),
            "catalogue": ts.catalogue,
            "horizon_days": config.label.horizon_days,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "observed_until": f"{ts.observed_until:%Y-%m-%d}",
            "metrics": _finite(metrics),
            "run_id": run_id,
            "calibration": final.calibrator.to_dict(),
            "uncalibrated_metrics": _finite(uncalibrated),
            "label": config.label.model_dump(),
            "train_dates": dates(holdout.train), "validation_dates": dates(holdout.valid),
            "test_dates": dates(holdout.test), "best_iteration": model.best_iteration_,
            "dataset_sha256": digest,
        }
        example = X_test.head(5)
        logged = log_and_register(
            booster_path=booster_path, metadata=metadata, example=example,
            example_proba=final.calibrator.transform(model.predict_proba(example)),
            model_name=config.model_name, extra_artifacts={"reference": ref_path})
        decision = gate(MlflowClient(), logged.model_name, logged.version, X_test=X_test,
                        y_test=y_test, challenger_proba=final.proba,
                        window=dates(holdout.test), settings=config.promotion)
        mlflow.set_tags({"promotion.decision": decision.decision,
                         "promotion.reason": decision.reason})
        progress(f"version {logged.version}: {decision.decision} ({decision.reason})")
        result = TrainResult(
            run_id=run_id, model_name=logged.model_name, model_version=logged.version,
            model_uri=logged.model_uri, tracking_uri=uri, metrics=metrics,
            baseline_metrics=baseline, train_rows=int(holdout.train.sum()),
            test_rows=int(holdout.test.sum()), train_dates=dates(holdout.train),
            test_dates=dates(holdout.test), observed_until=f"{ts.observed_until:%Y-%m-%d}",
            seconds=round(time.perf_counter() - started, 1),
            top_features=list(importance.index[:5]), uncalibrated_metrics=uncalibrated,
            health_baseline_metrics=health_metrics, lift_over_baselines=lifts,
            validation_dates=dates(holdout.valid), best_iteration=model.best_iteration_,
            calibration=final.calibrator.to_dict(), segment_auc=segments,
            health_backtest=health_bt, backtest=backtest, promotion=decision.to_dict(),
            dataset_digest=digest, tuning=tuning)
        mlflow.log_dict(json.loads(json.dumps(result.to_dict(), default=_json_safe)), "summary.json")
    return result


def _json_safe(value: object) -> object:
    return str(value)


class LineageDataset(PandasDataset):
    """A pandas dataset for the run's Datasets tab whose schema is read off the column dtypes.

    MLflow infers a frame's schema by checking every value of each string column, about 2.5 s per
    frame of the default data (5 s of a 41 s training run); the dtypes say the same thing here,
    because string columns hold only strings and nulls.
    """

    @cached_property
    def schema(self) -> Schema:
        strings = [c for c in self.df.columns if pd.api.types.is_string_dtype(self.df[c])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the hint on integer columns
            typed = infer_signature(self.df.drop(columns=strings).head(0)).inputs
        specs = {c.name: c for c in typed.inputs}
        return Schema([ColSpec(DataType.string if c in strings else specs[c].type, c,
                               required=not self.df[c].isna().any()) for c in self.df.columns])


def _log_lineage(ts: TrainingSet, holdout: Fold, source: str, digest: str) -> None:
    """``mlflow.log_input`` for the training and test rows (the Datasets tab of the run)."""
    for context, mask in (("training", holdout.train | holdout.valid), ("test", holdout.test)):
        with warnings.catch_warnings():
            # MLflow warns that a path-like source is ambiguous; it does not apply to a lineage
            # record.
            warnings.simplefilter("ignore", UserWarning)
            rows = mlflow.data.from_pandas(ts.frame[mask], source=source, targets="churned",
                                           name=f"churn-rows-{context}")
        dataset = LineageDataset(rows.df, source=rows.source, targets="churned", name=rows.name,
                                 digest=rows.digest)
        mlflow.log_input(dataset, context=context, tags={"dataset_sha256": digest})


def _log_plots(tmp: Path, y: np.ndarray, final: FoldOutcome, importance: pd.Series,
               X_test: pd.DataFrame) -> None:  # noqa: N803
    scores = {"LightGBM (calibrated)": final.proba, "logistic regression": final.logreg,
              "rule-only health score": final.health}
    paths = [
        plots.roc_plot(y, scores, tmp / "roc.png"),
        plots.pr_plot(y, scores, tmp / "pr.png"),
        plots.calibration_plot(y, {"before calibration": final.raw,
                                   "after calibration": final.proba}, tmp / "calibration.png"),
        plots.lift_plot(y, scores, tmp / "lift.png"),
        plots.importance_plot(importance, tmp / "feature_importance.png"),
    ]
    contrib, values = shap_values(final.model, X_test)
    names = final.model.encoder_.feature_names
    paths.append(plots.shap_summary_plot(contrib, values, names, tmp / "shap_summary.png"))
    mean_abs = pd.Series(np.abs(contrib).mean(axis=0), index=names).sort_values(ascending=False)
    mlflow.log_dict({k: float(v) for k, v in mean_abs.items()}, "shap_mean_abs.json")
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path="plots")


def scoring_frame(tables: Tables, as_of: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """Feature rows for every account active at ``as_of`` (default: the day after the data ends)."""
    when = (tables.latest_date() + pd.Timedelta(days=1)) if as_of is None else pd.Timestamp(as_of)
    return build_features(tables, scoring_observations(tables, when))


def evaluate_registered(data: str | Path | Tables, model_uri: str, *, tracking: str | None = None,
                        horizon_days: int | None = None, observed_until: str | None = None,
                        config: TrainConfig | None = None, progress: Progress = _quiet
                        ) -> dict[str, object]:
    """Score every observation date of a data set with a registered model and measure it.

    The label definition defaults to the model's own (its horizon and grace period), so the
    numbers are comparable with those logged when it was trained. Nothing is written to MLflow.
    """
    from features.labels import training_observations
    from training.registry import load_scorer

    config = (config or TrainConfig()).model_copy(deep=True)
    tables = data if isinstance(data, Tables) else load_tables(data)
    mlflow.set_tracking_uri(tracking_uri(tracking))
    score, metadata = load_scorer(model_uri)
    # The model's label definition, except where observations start (that belongs to the data).
    trained = {k: v for k, v in (metadata.get("label") or {}).items() if k != "first_date"}
    label = LabelSettings.model_validate({**config.label.model_dump(), **trained})
    label.horizon_days = horizon_days or metadata.get("horizon_days") or label.horizon_days
    observed = (tables.observed_until() if observed_until is None
                else pd.Timestamp(observed_until).normalize())
    obs = training_observations(tables, label.to_label_config(), observed, first=label.first_date)
    progress(f"scoring {len(obs):,} rows over {obs['as_of'].nunique()} observation dates with "
             f"{model_uri}")
    feats = build_features(tables, obs[["account_id", "as_of"]])
    y = obs["churned"].to_numpy()
    proba = score(feats)
    bins = config.evaluation.ece_bins
    per_date = {}
    for date, idx in feats.groupby("as_of").indices.items():
        per_date[f"{pd.Timestamp(date):%Y-%m-%d}"] = classification_metrics(y[idx], proba[idx],
                                                                             ece_bins=bins)
    seen = set(metadata.get("train_dates") or []) | set(metadata.get("validation_dates") or [])
    return {
        "model_uri": model_uri, "model_run_id": metadata.get("run_id"),
        # Dates the model trained or calibrated on: their metrics flatter it (same data only).
        "dates_seen_in_training": sorted(seen & set(per_date)),
        "horizon_days": label.horizon_days, "observed_until": f"{observed:%Y-%m-%d}",
        "model_train_dates": metadata.get("train_dates"),
        "metrics": classification_metrics(y, proba, ece_bins=bins),
        "health_baseline_metrics": classification_metrics(y, health_rule_risk(feats),
                                                          probabilities=False),
        "per_date": per_date,
        "segment_auc": segment_auc(y, proba, feats, config.evaluation.segment_columns),
        "health_backtest": {"rules_only": health_backtest(y, health_scores(feats)),
                            "with_model_risk": health_backtest(y, health_scores(feats, proba))},
    }
