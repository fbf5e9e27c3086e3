"""Training configuration: label definition, split and LightGBM hyperparameters (pydantic-validated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from features.labels import LabelConfig

MODEL_NAME = "churn-risk"
EXPERIMENT_NAME = "churn-risk"


class LabelSettings(BaseModel):
    """How churn is labelled (see ``features.labels``)."""

    model_config = ConfigDict(extra="forbid")
    horizon_days: int = Field(90, gt=0, description="Churn within this many days after as_of")
    grace_days: int = Field(30, ge=0, description="A gap up to this long between subscriptions "
                            "is not churn")
    frequency: str = Field("MS", description="pandas offset alias of the observation dates")

    def to_label_config(self) -> LabelConfig:
        return LabelConfig(self.horizon_days, self.grace_days, self.frequency)


class SplitSettings(BaseModel):
    """Time-based hold-out: the latest observation dates are the test set."""

    model_config = ConfigDict(extra="forbid")
    test_dates: int = Field(2, ge=1, description="Latest observation dates held out for testing")


class LightGBMSettings(BaseModel):
    """LightGBM hyperparameters (names as in ``lightgbm.train``)."""

    model_config = ConfigDict(extra="allow")
    objective: str = "binary"
    learning_rate: float = Field(0.03, gt=0)
    num_boost_round: int = Field(300, gt=0)
    num_leaves: int = Field(15, gt=1)
    min_child_samples: int = Field(40, gt=0)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    seed: int = 7

    def params(self) -> dict[str, Any]:
        """Parameters for ``lightgbm.train`` (without the number of rounds)."""
        params = self.model_dump(exclude={"num_boost_round"})
        params.update(verbose=-1, deterministic=True, force_row_wise=True)
        return params


class TrainConfig(BaseModel):
    """Everything a training run needs besides the data."""

    model_config = ConfigDict(extra="forbid")
    label: LabelSettings = LabelSettings()
    split: SplitSettings = SplitSettings()
    lightgbm: LightGBMSettings = LightGBMSettings()
    model_name: str = MODEL_NAME
    experiment_name: str = EXPERIMENT_NAME

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load and validate a YAML config file."""
        with open(path) as fh:
            return cls.model_validate(yaml.safe_load(fh) or {})
