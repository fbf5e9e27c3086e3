"""The training set: labelled point-in-time feature rows of a data set, and the model's columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.contract import Tables
from features.definitions import (
    catalogue,
    catalogue_records,
    categorical_features,
    feature_names,
)
from features.mlflow_defaults import DEFAULT_MODEL_NAME
from features.pointintime import KEYS, build_features
from features.rows import labelled_rows
from training.config import TrainConfig

LABEL = "churned"


@dataclass
class TrainingSet:
    """Labelled feature rows keyed by (account_id, as_of)."""

    frame: pd.DataFrame
    feature_names: list[str]
    observed_until: pd.Timestamp
    categorical: list[str] = field(default_factory=list)
    catalogue: list[dict[str, object]] = field(default_factory=list)
    fat_tailed: list[str] = field(default_factory=list)

    @property
    def X(self) -> pd.DataFrame:  # noqa: N802 - the usual name for a feature matrix
        return self.frame[self.feature_names]

    @property
    def y(self) -> np.ndarray:
        return self.frame[LABEL].to_numpy()


def resolve_label(config: TrainConfig, tables: Tables) -> TrainConfig:
    """The settings actually used for ``tables``: the label settings the config sets explicitly,
    else the data set's own churn definition (a mapping's ``churn:`` section), else the config's
    defaults; the model name the config sets, else the data set's name, else the default."""
    config = config.model_copy(deep=True)
    config.model_name = config.model_name or tables.name or DEFAULT_MODEL_NAME
    churn = tables.churn
    explicit = config.label.model_fields_set
    if "horizon_days" not in explicit and churn.horizon_days is not None:
        config.label.horizon_days = churn.horizon_days
    if "grace_days" not in explicit and churn.grace_days is not None:
        config.label.grace_days = churn.grace_days
    return config


def build_training_set(tables: Tables, config: TrainConfig,
                       observed_until: pd.Timestamp | str | None = None, *,
                       spark: Any = None) -> TrainingSet:
    """Observation dates, labels and point-in-time features for every active account.

    ``config`` should already be resolved against the data (:func:`resolve_label`); ``spark``
    (a SparkSession) builds the features on Spark.
    """
    observed = (tables.observed_until() if observed_until is None
                else pd.Timestamp(observed_until).normalize())
    obs = labelled_rows(tables, config.label, observed)
    feats = build_features(tables, obs[KEYS], spark=spark)
    frame = pd.concat([feats, obs[[LABEL]].reset_index(drop=True)], axis=1)
    fc = tables.feature_config
    names = config.features.select(feature_names(fc))
    keep = set(names)
    return TrainingSet(frame, names, observed,
                       [c for c in categorical_features(fc) if c in keep],
                       [r for r in catalogue_records(fc) if r["name"] in keep],
                       [s.name for s in catalogue(fc) if s.fat_tailed and s.name in keep])
