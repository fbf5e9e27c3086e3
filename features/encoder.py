"""Turning feature values into the model's numeric matrix, identically in training and serving.

Categorical features become the index of their value in the category list learned at training
time (unknown or missing values become NaN, which LightGBM treats as missing); numeric features
become float64. Training, the MLflow pyfunc and the API all call :class:`FeatureEncoder`, so a
category can never be encoded one way in training and another way in serving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class FeatureEncoder:
    """Encodes feature frames or records into a float matrix with a fixed column order."""

    feature_names: list[str]
    categorical: list[str] = field(default_factory=list)
    categories_: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame) -> FeatureEncoder:
        """Learn the category list of each categorical feature (sorted, missing excluded)."""
        self.categories_ = {
            name: sorted(str(v) for v in frame[name].dropna().unique()) for name in self.categorical
        }
        return self

    @property
    def categorical_indices(self) -> list[int]:
        return [self.feature_names.index(name) for name in self.categorical]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a frame; absent feature columns are treated as missing."""
        out = np.full((len(frame), len(self.feature_names)), np.nan, dtype=np.float64)
        for j, name in enumerate(self.feature_names):
            if name not in frame.columns:
                continue
            if name in self.categories_:
                values = frame[name].astype("string")
                codes = pd.Index(self.categories_[name]).get_indexer(values)
                out[:, j] = np.where((codes >= 0) & values.notna().to_numpy(), codes, np.nan)
            else:
                out[:, j] = pd.to_numeric(frame[name], errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan)
        return out

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode a list of ``{feature: value}`` dicts (the API's fast path; no pandas)."""
        lookups = {name: {c: float(i) for i, c in enumerate(cats)}
                   for name, cats in self.categories_.items()}
        out = np.full((len(records), len(self.feature_names)), np.nan, dtype=np.float64)
        for i, record in enumerate(records):
            row = out[i]
            for j, name in enumerate(self.feature_names):
                value = record.get(name)
                if value is None:
                    continue
                lookup = lookups.get(name)
                if lookup is not None:
                    row[j] = lookup.get(str(value), math.nan)
                else:
                    row[j] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names, "categorical": self.categorical,
                "categories": self.categories_}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        enc = cls(list(data["feature_names"]), list(data["categorical"]))
        enc.categories_ = {k: list(v) for k, v in data["categories"].items()}
        return enc
