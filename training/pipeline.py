"""One training run end to end: data -> training set -> model -> metrics -> registry."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.builder import build_features
from features.contract import Tables, load_tables
from features.definitions import catalogue_records
from features.labels import scoring_observations
from training.config import TrainConfig
from training.evaluate import classification_metrics
from training.registry import ensure_experiment, log_and_register, tracking_uri
from training.train import (
    ChurnModel,
    baseline_logistic,
    build_training_set,
    time_split,
)

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    """What a training run produced (``churn train --json`` prints this)."""

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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _quiet(_: str) -> None:
    pass


def run_training(data: str | Path | Tables, config: TrainConfig | None = None, *,
                 tracking: str | None = None, observed_until: str | None = None,
                 progress: Progress = _quiet) -> TrainResult:
    """Train, evaluate on the latest held-out dates, log to MLflow and register as champion."""
    started = time.perf_counter()
    config = config or TrainConfig()
    tables = data if isinstance(data, Tables) else load_tables(data)
    progress(f"loaded {', '.join(tables.available)} from {tables.source}")
    ts = build_training_set(tables, config, observed_until)
    progress(f"built {len(ts.frame):,} training rows over {ts.frame['as_of'].nunique()} "
             f"observation dates (churn rate {ts.frame['churned'].mean():.1%})")
    train, test = time_split(ts.frame["as_of"], config.split.test_dates, config.label.horizon_days)
    X_train, y_train = ts.X[train], ts.y[train]  # noqa: N806
    X_test, y_test = ts.X[test], ts.y[test]  # noqa: N806

    model = ChurnModel(config.lightgbm).fit(X_train, y_train)
    metrics = classification_metrics(y_test, model.predict_proba(X_test))
    baseline = baseline_logistic(X_train, y_train)
    baseline_metrics = classification_metrics(y_test, baseline.predict_proba(X_test)[:, 1])
    progress(f"held-out ROC AUC {metrics['roc_auc']:.3f} (logistic baseline "
             f"{baseline_metrics['roc_auc']:.3f})")

    uri = tracking_uri(tracking)
    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment(config.experiment_name, uri)
    dates = lambda mask: sorted(f"{d:%Y-%m-%d}" for d in ts.frame["as_of"][mask].unique())  # noqa: E731
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({
            "horizon_days": config.label.horizon_days, "grace_days": config.label.grace_days,
            "observation_frequency": config.label.frequency,
            "test_dates": config.split.test_dates, "observed_until": f"{ts.observed_until:%Y-%m-%d}",
            "data_source": tables.source, "tables": ",".join(tables.available),
            **{f"lgbm_{k}": v for k, v in config.lightgbm.model_dump().items()},
        })
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_metrics({f"baseline_logreg_test_{k}": v for k, v in baseline_metrics.items()
                            if np.isfinite(v)})
        mlflow.log_metric("train_rows", float(train.sum()))
        importance = model.feature_importance()
        mlflow.log_dict(catalogue_records(), "feature_catalogue.json")
        mlflow.log_dict({k: float(v) for k, v in importance.items()}, "feature_importance.json")
        progress("logging and registering the model")
        with tempfile.TemporaryDirectory() as tmp:
            booster_path = Path(tmp) / "booster.txt"
            model.booster_.save_model(str(booster_path))
            metadata = {
                "model_name": config.model_name,
                "encoder": model.encoder_.to_dict(),
                "catalogue": catalogue_records(),
                "horizon_days": config.label.horizon_days,
                "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "observed_until": f"{ts.observed_until:%Y-%m-%d}",
                "metrics": {k: v for k, v in metrics.items() if np.isfinite(v)},
                "run_id": run.info.run_id,
            }
            example = X_test.head(5)
            logged = log_and_register(booster_path=booster_path, metadata=metadata,
                                      example=example, example_proba=model.predict_proba(example),
                                      model_name=config.model_name)
        result = TrainResult(
            run_id=run.info.run_id, model_name=logged.model_name, model_version=logged.version,
            model_uri=logged.model_uri, tracking_uri=uri, metrics=metrics,
            baseline_metrics=baseline_metrics, train_rows=int(train.sum()),
            test_rows=int(test.sum()), train_dates=dates(train), test_dates=dates(test),
            observed_until=f"{ts.observed_until:%Y-%m-%d}",
            seconds=round(time.perf_counter() - started, 1),
            top_features=list(importance.index[:5]))
        mlflow.log_dict(json.loads(json.dumps(result.to_dict(), default=str)), "summary.json")
    return result


def scoring_frame(tables: Tables, as_of: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """Feature rows for every account active at ``as_of`` (default: the day after the data ends)."""
    when = (tables.latest_date() + pd.Timedelta(days=1)) if as_of is None else pd.Timestamp(as_of)
    return build_features(tables, scoring_observations(tables, when))
