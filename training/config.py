"""Training configuration: label definition, split and LightGBM hyperparameters (pydantic-validated).

The label settings are the data layer's own (:class:`features.labels.LabelSettings`): a training
config's ``label:`` section is exactly what builds the training rows."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from features.labels import LabelSettings

EXPERIMENT_NAME = "churn-risk"


class SplitSettings(BaseModel):
    """Time-based splits over observation dates (never over rows: accounts repeat across dates).

    The latest ``test_dates`` dates are the held-out test window. Before it, the latest
    ``validation_dates`` dates whose labels close before the test window are the validation fold
    (early stopping and calibration); the model trains on the dates whose labels close before the
    validation fold. The rolling-origin backtest repeats this for each of the latest
    ``backtest_folds`` dates as the test date.
    """

    model_config = ConfigDict(extra="forbid")
    test_dates: int = Field(2, ge=1, description="Latest observation dates held out for testing")
    validation_dates: int = Field(1, ge=1, description="Dates before the test window used for "
                                  "early stopping and calibration")
    backtest_folds: int = Field(4, ge=0, description="Rolling-origin folds (0 = no backtest)")


class CalibrationSettings(BaseModel):
    """Probability calibration fitted on the validation fold (held-out dates)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["isotonic", "sigmoid", "none"] = Field(
        "sigmoid", description="sigmoid (Platt) keeps the ranking intact; isotonic is more "
        "flexible but needs more held-out churners and ties scores")


class PromotionSettings(BaseModel):
    """The gate a challenger must pass to become champion."""

    model_config = ConfigDict(extra="forbid")
    metric: Literal["roc_auc", "pr_auc", "top_decile_lift"] = "roc_auc"
    margin: float = Field(0.005, ge=0, description="How much the challenger must beat the "
                          "champion by, on the challenger's test window")


class EvaluationSettings(BaseModel):
    """What the evaluation reports beyond the headline metrics."""

    model_config = ConfigDict(extra="forbid")
    segment_columns: list[str] = Field(default_factory=lambda: ["segment", "plan"],
                                       description="Per-segment ROC AUC for these features "
                                       "(skipped when absent)")
    ece_bins: int = Field(10, ge=2, description="Equal-count bins for the calibration error")


class LightGBMSettings(BaseModel):
    """LightGBM hyperparameters (names as in ``lightgbm.train``)."""

    model_config = ConfigDict(extra="allow")
    objective: str = "binary"
    learning_rate: float = Field(0.03, gt=0)
    num_boost_round: int = Field(500, gt=0, description="Upper bound; early stopping picks "
                                 "the number actually used")
    num_leaves: int = Field(15, gt=1)
    # Reasons are exact TreeSHAP, whose cost grows with tree depth: depth 5 explains cheaper than
    # unlimited depth at the same quality and leaves room for data with deeper interactions than
    # depth 4 (benchmarks/tree_depth.py; the figures are in docs/benchmarks.md).
    max_depth: int = Field(5, ge=-1, description="Maximum tree depth (-1 = no limit)")
    min_child_samples: int = Field(40, gt=0)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    seed: int = 7
    # One thread: on tens of thousands of rows OpenMP's overhead dominates, and on a busy machine
    # extra threads slow training down. Raise it for millions of rows.
    num_threads: int = Field(1, ge=0, description="LightGBM threads (0 = all cores)")
    early_stopping_rounds: int = Field(50, ge=0, description="Stop when the validation log loss "
                                       "has not improved for this many rounds (0 = off)")

    def params(self) -> dict[str, Any]:
        """Parameters for ``lightgbm.train`` (without the number of rounds)."""
        params = self.model_dump(exclude={"num_boost_round", "early_stopping_rounds"})
        params.update(verbose=-1, deterministic=True, force_row_wise=True)
        return params


class FeatureSelection(BaseModel):
    """Which catalogue features the model uses (shell-style patterns, e.g. ``key_*``).

    Empty ``include`` = every feature of the data set's catalogue. On a small data set with a known
    mechanism, dropping families that carry no signal there cuts noise.
    """

    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    #: Features kept although they alone separate the label almost perfectly (the leakage guard
    #: of :mod:`training.leakage` stops a run otherwise).
    allow_leaky: list[str] = Field(default_factory=list)

    def select(self, names: list[str]) -> list[str]:
        """The selected names, in catalogue order; errors name patterns that match nothing."""
        def matches(name: str, patterns: list[str]) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in patterns)

        for pattern in self.include + self.exclude:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(f"feature pattern {pattern!r} matches no feature of this data set")
        chosen = [n for n in names if (not self.include or matches(n, self.include))
                  and not matches(n, self.exclude)]
        if not chosen:
            raise ValueError("the feature selection leaves no feature")
        return chosen


class TrainConfig(BaseModel):
    """Everything a training run needs besides the data."""

    model_config = ConfigDict(extra="forbid")
    label: LabelSettings = LabelSettings()
    split: SplitSettings = SplitSettings()
    lightgbm: LightGBMSettings = LightGBMSettings()
    features: FeatureSelection = FeatureSelection()
    calibration: CalibrationSettings = CalibrationSettings()
    promotion: PromotionSettings = PromotionSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    #: The registered model's name [default: the data set's name (a mapping's ``name``), else
    #: "churn-risk"]: one model per data set, so two data sets never compete for one champion.
    model_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    experiment_name: str = EXPERIMENT_NAME

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load and validate a YAML config file."""
        with open(path) as fh:
            return cls.model_validate(yaml.safe_load(fh) or {})
