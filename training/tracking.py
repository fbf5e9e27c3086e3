"""Every MLflow call of training: the run's parameters, metrics, lineage, plots and model, the
registry's versions, aliases and tags, and reading a registered model back for evaluation and
the promotion gate. The rest of ``training`` computes; this module records."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import AnyType

import features
from features.digests import digest_tags
from features.mlflow_defaults import CHALLENGER, CHAMPION, tracking_uri
from features.pointintime import family_availability
from features.scorer import ModelScorer
from training import plots, promotion
from training.artifacts import shap_values
from training.metrics import quality_warnings
from training.run import Progress, TrainingRun, quiet

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


@dataclass
class TrainResult:
    """What a training run produced and where it was recorded (``churn train --json`` prints it).

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
    #: "time", or "cross-validation" for a snapshot export: then ``metrics`` are out-of-fold
    #: over every row, ``backtest`` holds the folds and ``cross_validation`` their mean and spread.
    validation: str = "time"
    cross_validation: dict[str, dict[str, float]] = field(default_factory=dict)
    #: What to know before trusting the figures (:func:`training.metrics.quality_warnings`).
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics MLflow and JSON can hold (NaN and infinity left out)."""
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def ensure_experiment(name: str, uri: str) -> str:
    """Get or create the experiment. With a SQLite store, artifacts go beside the database file
    (not into whatever the current directory is)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if urlparse(uri).scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):]).resolve()
        location = (db.parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


class LineageDataset(PandasDataset):
    """A pandas dataset for the run's Datasets tab whose schema is read off the column dtypes.

    MLflow infers a frame's schema by checking every value of each string column, which is slow
    on training rows; the dtypes say the same thing here, because string columns hold only
    strings and nulls.
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


def _log_lineage(run: TrainingRun) -> None:
    """``mlflow.log_input`` for the training and test rows (the Datasets tab of the run)."""
    holdout, frame = run.holdout, run.training_set.frame
    contexts = [("training", holdout.train | holdout.valid)]
    if not run.cross_validated:  # a snapshot's rows are each tested on once, in its folds
        contexts.append(("test", holdout.test))
    for context, mask in contexts:
        with warnings.catch_warnings():
            # MLflow warns that a path-like source is ambiguous; it does not apply to a lineage
            # record.
            warnings.simplefilter("ignore", UserWarning)
            rows = mlflow.data.from_pandas(frame[mask], source=run.tables.source,
                                           targets="churned", name=f"churn-rows-{context}")
        dataset = LineageDataset(rows.df, source=rows.source, targets="churned", name=rows.name,
                                 digest=rows.digest)
        mlflow.log_input(dataset, context=context, tags={"dataset_sha256": run.digest})


def _log_plots(tmp: Path, run: TrainingRun, importance: pd.Series) -> None:
    final, y = run.final, run.y_test
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
    contrib, values = shap_values(final.model, run.X_test)
    names = final.model.encoder_.feature_names
    paths.append(plots.shap_summary_plot(contrib, values, names, tmp / "shap_summary.png"))
    mean_abs = pd.Series(np.abs(contrib).mean(axis=0), index=names).sort_values(ascending=False)
    mlflow.log_dict({k: float(v) for k, v in mean_abs.items()}, "shap_mean_abs.json")
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path="plots")


def _log_params_and_metrics(run: TrainingRun, tune_trials: int) -> None:
    config, ts, s = run.config, run.training_set, run.config.split
    mlflow.log_params({
        "horizon_days": run.horizon_days, "grace_days": config.label.grace_days,
        "observation_frequency": config.label.frequency,
        "test_dates": s.test_dates, "validation_dates": s.validation_dates,
        "backtest_folds": s.backtest_folds, "observed_until": run.observed_until,
        "validation": run.validation,
        "calibration": config.calibration.method, "promotion_metric": config.promotion.metric,
        "promotion_margin": config.promotion.margin, "tune_trials": tune_trials,
        "data_source": run.tables.source, "tables": ",".join(run.tables.available),
        "features": len(ts.feature_names), "best_iteration": run.final.model.best_iteration_,
        **{f"lgbm_{k}": v for k, v in config.lightgbm.model_dump().items()},
    })
    mlflow.set_tags({"dataset_sha256": run.digest, "dataset": run.tables.name or "contract",
                     "test_window": ",".join(run.dates(run.holdout.test))})
    m = run.final.metrics
    for prefix, values in (("test", m["model"]), ("test_uncalibrated", m["uncalibrated"]),
                           ("baseline_logreg_test", m["logreg"]),
                           ("baseline_health_test", m["health_rules"])):
        mlflow.log_metrics({f"{prefix}_{k}": v for k, v in finite(values).items()})
    for name, lift in run.lifts.items():
        mlflow.log_metrics({f"lift_over_{name}_{k}": v for k, v in lift.items()})
    mlflow.log_metric("train_rows", float(run.holdout.train.sum()))
    # A snapshot's stratified folds are logged as the time backtest is, under "cv".
    prefix = "cv" if run.cross_validated else "backtest"
    for step, rec in enumerate(run.backtest):
        mlflow.log_metrics({f"{prefix}_{k}": float(v) for k, v in rec.items()
                            if isinstance(v, int | float) and np.isfinite(v)}, step=step)
    if run.backtest:
        table = pd.DataFrame(run.backtest)
        means = table.select_dtypes("number").mean()
        mlflow.log_metrics({f"{prefix}_mean_{k}": float(v) for k, v in means.items()
                            if np.isfinite(v)})
        mlflow.log_table(table.astype({c: str for c in ("validation_dates",) if c in table}),
                         f"{prefix}.json")
    for name, stats in run.cv.items():
        mlflow.log_metrics({f"cv_{name}_{k}": v for k, v in finite(stats).items()})


def model_metadata(run: TrainingRun, run_id: str) -> dict[str, Any]:
    """``metadata.json`` of the model: everything serving needs besides the booster."""
    config, ts, model, holdout = run.config, run.training_set, run.final.model, run.holdout
    return {
        "model_name": config.model_name,
        "encoder": model.encoder_.to_dict(),
        "catalogue": ts.catalogue,
        "horizon_days": run.horizon_days,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "observed_until": run.observed_until,
        # "time" or "cross-validation" (a snapshot export: metrics are out-of-fold, no dates).
        "validation": run.validation,
        "cross_validation": run.cv,
        "metrics": finite(run.metrics),
        "run_id": run_id,
        "calibration": run.final.calibrator.to_dict(),
        "uncalibrated_metrics": finite(run.final.metrics["uncalibrated"]),
        "label": config.label.model_dump(mode="json"),
        "train_dates": run.dates(holdout.train), "validation_dates": run.dates(holdout.valid),
        "test_dates": run.dates(holdout.test), "best_iteration": model.best_iteration_,
        "dataset_sha256": run.digest,
        # What the model was trained on: the promotion gate compares only like with like.
        "dataset": run.tables.name or "",
        "families": family_availability(run.tables),
        # The data set's key events (declared or chosen): scoring builds the same features.
        "key_events": list(run.tables.feature_config.key_events),
        "key_event_windows": list(run.tables.feature_config.key_event_windows),
        # Where the health inputs stood in the training rows: serving scores them against it.
        "health_reference": run.final.reference.to_dict(),
    }


def _example_frame(X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
    """Input example with plain object/float columns, so the signature names real types."""
    ex = X.head(5).copy()
    for col in ex.columns:
        if pd.api.types.is_string_dtype(ex[col]):
            ex[col] = ex[col].astype(object).where(ex[col].notna(), None)
        elif pd.api.types.is_numeric_dtype(ex[col]):
            # Doubles, not integers: any feature may be missing, and an integer column in the
            # signature would make `mlflow models serve` reject a missing value.
            ex[col] = ex[col].astype("float64")
    return ex


def _signature(example: pd.DataFrame, example_proba: Any) -> ModelSignature:
    """Every feature optional (a missing feature is a missing value); categorical features are
    strings; numeric features accept any number type. MLflow refuses int64 for a ``double``
    column ("cannot safely convert"), and JSON callers of ``mlflow models serve`` send whole
    numbers such as ``12`` as integers; the pyfunc coerces the values itself."""
    cols = []
    for name in example.columns:
        if pd.api.types.is_numeric_dtype(example[name]):
            cols.append(ColSpec(AnyType(), name, required=False))
        else:
            cols.append(ColSpec(DataType.string, name, required=False))
    return ModelSignature(inputs=Schema(cols), outputs=infer_signature(example, example_proba).outputs)


def log_and_register(*, booster_path: Path, metadata: dict[str, Any], example: pd.DataFrame,
                     example_proba: Any, model_name: str,
                     extra_artifacts: dict[str, Path] | None = None) -> str:
    """Log the pyfunc (inside the active run), register a new version, tag it with the SHA-256
    of each artifact (:mod:`features.digests`) and alias it challenger (:mod:`training.promotion`
    decides whether it also becomes champion); returns the version.

    ``example`` is a few rows of feature values and ``example_proba`` the model's output for them;
    together they define the model signature and input example. ``extra_artifacts`` are added to
    the model directory (e.g. the reference distributions for drift checks).
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_and_register must be called inside an MLflow run")
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "metadata.json"
        meta_path.write_text(json.dumps(metadata, indent=2, default=str))
        example = _example_frame(example)
        artifacts = {"booster": Path(booster_path), "metadata": meta_path,
                     **{k: Path(v) for k, v in (extra_artifacts or {}).items()}}
        # MLflow copies each artifact into the model's artifacts/ under its own file name.
        digests = digest_tags({path.name: path for path in artifacts.values()})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={k: str(v) for k, v in artifacts.items()},
            code_paths=[str(Path(features.__file__).parent)],
            signature=_signature(example, example_proba),
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=["lightgbm", "pandas", "numpy", "mlflow"],
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    # Serving checks the downloaded files against these before it reads them (features.digests).
    for key, value in digests.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    return version


def _artifact_location(model_uri: str, client: MlflowClient) -> str:
    """Where a model's files are: a registry URI (``models:/<name>/<version>``, ``@<alias>``,
    ``/latest``) resolved with ``client``; anything else as given.

    MLflow's own resolution of ``models:/`` looks the model up in the global tracking URI,
    whatever store is asked for; resolving with the client keeps to the store asked for.
    """
    if not model_uri.startswith("models:/"):
        return model_uri
    ref = model_uri[len("models:/"):].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = str(client.get_model_version_by_alias(name, alias).version)
    else:
        name, _, version = ref.partition("/")
        if version == "latest":
            version = str(max(int(v.version) for v in
                              client.search_model_versions(f"name = '{name}'")))
    return client.get_model_version_download_uri(name, version)


def load_scorer(model_uri: str, tracking: str | None = None) -> tuple[ModelScorer, dict[str, Any]]:
    """A registered model's :class:`~features.scorer.ModelScorer` and its metadata.

    Reads ``booster.txt`` and ``metadata.json`` from the model directory, as serving does, so a
    model whose feature list differs from today's still scores (absent features are missing values)
    instead of failing the signature check.
    """
    uri = tracking_uri(tracking)
    location = _artifact_location(model_uri, MlflowClient(uri, registry_uri=uri))
    local = Path(mlflow.artifacts.download_artifacts(location, tracking_uri=uri,
                                                     registry_uri=uri))
    artifacts = local / "artifacts"
    metadata = json.loads((artifacts / "metadata.json").read_text())
    return ModelScorer.from_files(artifacts / "booster.txt", metadata), metadata


class Registry:
    """The registry operations the promotion gate needs, on one tracking URI."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = tracking_uri(uri)
        self.client = MlflowClient(self.uri)

    def champion(self, model_name: str) -> str | None:
        """The version aliased champion, or None."""
        try:
            return str(self.client.get_model_version_by_alias(model_name, CHAMPION).version)
        except MlflowException:
            return None

    def check_version(self, model_name: str, version: str) -> str:
        """``version`` as the registry spells it; raises MlflowException when it does not exist."""
        return str(self.client.get_model_version(model_name, str(version)).version)

    def scorer(self, model_name: str, version: str) -> tuple[ModelScorer, dict[str, Any]]:
        return load_scorer(f"models:/{model_name}/{version}", self.uri)

    def metadata(self, model_name: str, version: str) -> dict[str, Any]:
        """A version's ``metadata.json`` (only that file is downloaded)."""
        location = self.client.get_model_version_download_uri(model_name, str(version))
        path = mlflow.artifacts.download_artifacts(f"{location.rstrip('/')}/artifacts/metadata.json",
                                                   tracking_uri=self.uri)
        return json.loads(Path(path).read_text())

    def set_champion(self, model_name: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, CHAMPION, str(version))

    def tag_version(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, str(version), key, value)


def record(run: TrainingRun, *, tracking: str | None = None,
           progress: Progress = quiet) -> TrainResult:
    """Log ``run`` to MLflow (parameters, metrics, lineage, plots, the model), register the model
    as ``challenger`` and promote it to ``champion`` if it passes the gate."""
    uri = tracking_uri(tracking)
    mlflow.set_tracking_uri(uri)
    config, ts, final, holdout = run.config, run.training_set, run.final, run.holdout
    experiment_id = ensure_experiment(config.experiment_name, uri)
    with mlflow.start_run(experiment_id=experiment_id) as active, \
            tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        run_id = active.info.run_id
        _log_params_and_metrics(run, int(run.tuning.get("trials", 0)))
        _log_lineage(run)
        segments, health_bt = run.segment_auc(), run.health_backtest()
        mlflow.log_dict(segments, "segment_auc.json")
        mlflow.log_dict(health_bt, "health_backtest.json")
        mlflow.log_dict(final.calibrator.to_dict(), "calibration.json")
        mlflow.log_dict(ts.catalogue, "feature_catalogue.json")
        importance = final.model.feature_importance()
        mlflow.log_dict({k: float(v) for k, v in importance.items()}, "feature_importance.json")
        progress("plotting, SHAP values and reference distributions")
        _log_plots(tmp, run, importance)
        ref_path = tmp / "reference_distributions.json"
        ref_path.write_text(json.dumps(run.reference()))
        mlflow.log_artifact(str(ref_path))

        progress("logging and registering the model")
        booster_path = tmp / "booster.txt"
        final.model.booster_.save_model(str(booster_path),
                                        num_iteration=final.model.best_iteration_)
        example = run.X_test.head(5)
        metadata = model_metadata(run, run_id)
        version = log_and_register(
            booster_path=booster_path, metadata=metadata, example=example,
            example_proba=final.scorer.predict(example), model_name=config.model_name,
            extra_artifacts={"reference": ref_path})
        window = run.dates(holdout.test)
        decision = promotion.gate(Registry(uri), config.model_name, version, X_test=run.X_test,
                                  y_test=run.y_test, challenger_proba=final.proba,
                                  window=window, settings=config.promotion, metadata=metadata)
        warnings = quality_warnings(final.metrics["model"], final.metrics["logreg"])
        mlflow.set_tags({"promotion.decision": decision.decision,
                         "promotion.reason": decision.reason,
                         **({"quality.warning": " ".join(warnings)} if warnings else {})})
        progress(f"version {version}: {decision.decision} ({decision.reason})")
        m = final.metrics
        result = TrainResult(
            run_id=run_id, model_name=config.model_name, model_version=version,
            model_uri=f"models:/{config.model_name}/{version}", tracking_uri=uri,
            metrics=m["model"], baseline_metrics=m["logreg"],
            train_rows=int(holdout.train.sum()), test_rows=int(holdout.test.sum()),
            train_dates=run.dates(holdout.train), test_dates=window,
            observed_until=run.observed_until,
            seconds=round(time.perf_counter() - run.started, 1),
            top_features=list(importance.index[:5]), uncalibrated_metrics=m["uncalibrated"],
            health_baseline_metrics=m["health_rules"], lift_over_baselines=run.lifts,
            validation_dates=run.dates(holdout.valid), best_iteration=final.model.best_iteration_,
            calibration=final.calibrator.to_dict(), segment_auc=segments,
            health_backtest=health_bt, backtest=run.backtest, promotion=decision.to_dict(),
            dataset_digest=run.digest, tuning=run.tuning, validation=run.validation,
            cross_validation=run.cv, warnings=warnings)
        mlflow.log_dict(json.loads(json.dumps(result.to_dict(), default=str)), "summary.json")
    return result
