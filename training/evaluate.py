"""Evaluating a registered model on a data set: every observation date scored and measured,
nothing retrained and nothing written to MLflow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.contract import Tables
from features.health import HealthReference, health_scores, rule_risk
from features.key_events import with_key_events
from features.labels import LabelSettings
from features.mlflow_defaults import tracking_uri
from features.pointintime import KEYS, build_features
from features.rows import labelled_rows
from features.scorer import check_coverage
from features.sources import load_tables
from training.config import TrainConfig
from training.metrics import classification_metrics, health_backtest, segment_auc
from training.run import Progress, quiet
from training.tracking import load_scorer


def evaluate_registered(data: str | Path | Tables, model_uri: str, *, tracking: str | None = None,
                        horizon_days: int | None = None, observed_until: str | None = None,
                        config: TrainConfig | None = None, progress: Progress = quiet
                        ) -> dict[str, object]:
    """Score every observation date of a data set with a registered model and measure it.

    The label definition defaults to the model's own (its horizon and grace period), so the
    numbers are comparable with those logged when it was trained.
    """
    config = config or TrainConfig()
    tables = data if isinstance(data, Tables) else load_tables(data)
    scorer, metadata = load_scorer(model_uri, tracking_uri(tracking))
    tables = with_key_events(tables, metadata.get("key_events"), metadata.get("key_event_windows"))
    # The model's label definition, except where observations start (that belongs to the data).
    trained = {k: v for k, v in (metadata.get("label") or {}).items() if k != "first_date"}
    label = LabelSettings.model_validate({**config.label.model_dump(), **trained})
    label.horizon_days = horizon_days or metadata.get("horizon_days") or label.horizon_days
    observed = (tables.observed_until() if observed_until is None
                else pd.Timestamp(observed_until).normalize())
    obs = labelled_rows(tables, label, observed)
    progress(f"scoring {len(obs):,} rows over {obs['as_of'].nunique()} observation dates with "
             f"{model_uri}")
    feats = build_features(tables, obs[KEYS])
    check_coverage(feats, scorer.encoder.feature_names, model_uri, f"the data at {tables.source}")
    y = obs["churned"].to_numpy()
    proba = scorer.predict(feats)
    bins = config.evaluation.ece_bins
    per_date = {}
    for date, idx in feats.groupby("as_of").indices.items():
        per_date[f"{pd.Timestamp(date):%Y-%m-%d}"] = classification_metrics(y[idx], proba[idx],
                                                                             ece_bins=bins)
    reference = HealthReference.from_dict(metadata.get("health_reference"))
    seen = set(metadata.get("train_dates") or []) | set(metadata.get("validation_dates") or [])
    return {
        "model_uri": model_uri, "model_run_id": metadata.get("run_id"),
        # Dates the model trained or calibrated on: their metrics flatter it (same data only).
        "dates_seen_in_training": sorted(seen & set(per_date)),
        "horizon_days": label.horizon_days, "observed_until": f"{observed:%Y-%m-%d}",
        "model_train_dates": metadata.get("train_dates"),
        "metrics": classification_metrics(y, proba, ece_bins=bins),
        "health_baseline_metrics": classification_metrics(y, rule_risk(feats, reference),
                                                          probabilities=False),
        "per_date": per_date,
        "segment_auc": segment_auc(y, proba, feats, config.evaluation.segment_columns),
        "health_backtest": {
            "rules_only": health_backtest(y, health_scores(feats, reference=reference)),
            "with_model_risk": health_backtest(y, health_scores(feats, proba,
                                                                reference=reference))},
    }
