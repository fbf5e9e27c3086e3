"""The customer health score: usage, engagement and sentiment rules blended with model risk.

Every component is a score from 0 to 100 (100 = healthiest):

* ``usage``      -- frequency and depth of product use (active days, active users per seat, share
  of the feature catalogue used, 30-day trend).
* ``engagement`` -- the relationship: recent proactive contact, few support requests and few open
  tickets.
* ``sentiment``  -- the latest NPS answer and the share of satisfied CSAT answers.
* ``risk``       -- ``100 * (1 - churn_probability)`` from the model.

Usage and engagement inputs are scored against the distribution of the data the model was
trained on (:class:`HealthReference`, stored with the model): an input's percentile there. A model
without one falls back to fixed thresholds. A component without data (no surveys yet, no
touchpoint table) is left out and its weight is shared among the others in proportion to their
weights.

The bands are here too: health bands on the 0-100 score and risk bands on the churn probability,
each a set of lower bounds, applied by :func:`band_labels`. This module is pure so that serving
(the live score), training (the rule-only baseline and the health backtest) and notebooks share
one definition; serving's settings choose the weights and bands, starting from these defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import FeatureConfig, catalogue

COMPONENTS = ("usage", "engagement", "sentiment", "risk")
DEFAULT_WEIGHTS: dict[str, float] = {"usage": 0.3, "engagement": 0.2, "sentiment": 0.2,
                                     "risk": 0.3}
#: Lower bounds of the health bands (0-100), best first.
DEFAULT_HEALTH_BANDS: dict[str, float] = {"green": 70.0, "amber": 40.0, "red": 0.0}
#: Lower bounds of the risk bands on the churn probability: low < 0.1 <= medium < 0.3 <= high.
DEFAULT_RISK_BANDS: dict[str, float] = {"high": 0.3, "medium": 0.1, "low": 0.0}

Columns = Mapping[str, np.ndarray]


def _col(values: Columns, name: str, n: int) -> np.ndarray:
    col = values.get(name)
    if col is None:
        return np.full(n, np.nan)
    return np.asarray(col, dtype=np.float64)


def _mean_available(parts: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(parts)
    count = np.sum(~np.isnan(stacked), axis=0)
    total = np.nansum(stacked, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


#: Quantile levels kept of each input's training distribution (a percentile grid).
REFERENCE_LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class HealthInput:
    """A feature feeding a usage or engagement component: whether more of it is healthier, and
    its fixed rule (a 0-1 score) for models without a reference distribution."""

    feature: str
    component: str
    higher_is_healthier: bool
    rule: Callable[[np.ndarray], np.ndarray]


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


HEALTH_INPUTS: tuple[HealthInput, ...] = (
    HealthInput("active_days_30d", "usage", True, lambda x: _clip(x / 20.0)),  # ~20 workdays
    HealthInput("active_users_per_seat_30d", "usage", True, _clip),
    HealthInput("catalogue_share_30d", "usage", True, lambda x: _clip(x / 0.6)),  # 60 % is deep
    HealthInput("events_trend_30d", "usage", True, lambda x: _clip(0.5 + x / 2.0)),
    HealthInput("days_since_last_proactive", "engagement", False, lambda x: _clip(1.0 - x / 90.0)),
    HealthInput("reactive_touchpoints_90d", "engagement", False,
                lambda x: 1.0 - _clip(np.log1p(x) / np.log1p(12.0))),
    HealthInput("open_tickets", "engagement", False, lambda x: 1.0 - _clip(x / 3.0)),
)


@dataclass(frozen=True)
class HealthReference:
    """Where each usage and engagement input stood in the data a model was trained on: a
    percentile grid per input. Scoring an input against it gives its percentile (mid-rank) in
    that data, so a component separates the accounts of any data set instead of saturating at a
    fixed threshold. Sentiment keeps its absolute scales (NPS 0-10, satisfied CSAT share)."""

    quantiles: Mapping[str, tuple[float, ...]]

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> HealthReference:
        """The reference of the rows of a feature frame (inputs it has values of)."""
        out: dict[str, tuple[float, ...]] = {}
        for spec in HEALTH_INPUTS:
            if spec.feature in frame.columns:
                values = pd.to_numeric(frame[spec.feature], errors="coerce").dropna().to_numpy()
                if len(values):
                    out[spec.feature] = tuple(np.quantile(values, REFERENCE_LEVELS).tolist())
        return cls(out)

    def rank(self, feature: str, values: np.ndarray) -> np.ndarray | None:
        """The mid-rank (0-1) of each value in the reference; None without one for ``feature``."""
        grid = self.quantiles.get(feature)
        if grid is None:
            return None
        points = np.asarray(grid)
        low = np.searchsorted(points, values, side="left")
        high = np.searchsorted(points, values, side="right")
        rank = (low + high) / (2.0 * len(points))
        return np.where(np.isnan(values), np.nan, rank)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.quantiles.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, list[float]] | None) -> HealthReference | None:
        return None if not data else cls({k: tuple(float(x) for x in v) for k, v in data.items()})


def _input_score(spec: HealthInput, x: np.ndarray, reference: HealthReference | None
                 ) -> np.ndarray:
    rank = None if reference is None else reference.rank(spec.feature, x)
    if rank is None:
        return spec.rule(x)
    return rank if spec.higher_is_healthier else 1.0 - rank


def component_scores(values: Columns, churn_probability: np.ndarray | None = None,
                     reference: HealthReference | None = None) -> dict[str, np.ndarray]:
    """Component scores (0-100, NaN = no data) from feature columns: each usage and engagement
    input scored against ``reference`` (its percentile in the model's training data) or, without
    one, by its fixed rule; sentiment on its absolute scales; risk from the probability."""
    n = len(next(iter(values.values()))) if values else (
        0 if churn_probability is None else len(churn_probability))
    scored = {spec.feature: _input_score(spec, _col(values, spec.feature, n), reference)
              for spec in HEALTH_INPUTS}
    active_days = _col(values, "active_days_30d", n)
    # No use at all is no upward trend; the trend counts only for accounts that used the product.
    scored["events_trend_30d"] = np.where(active_days > 0, scored["events_trend_30d"],
                                          np.where(np.isnan(active_days), np.nan, 0.0))
    # Never contacted proactively (with touchpoint data) is the worst recency.
    contacted = ~np.isnan(_col(values, "proactive_touchpoints_90d", n))
    since = scored["days_since_last_proactive"]
    scored["days_since_last_proactive"] = np.where(contacted, np.nan_to_num(since, nan=0.0),
                                                   np.nan)
    parts = {c: [scored[s.feature] for s in HEALTH_INPUTS if s.component == c]
             for c in ("usage", "engagement")}
    sentiment = _mean_available([_col(values, "last_nps", n) / 10.0,
                                 _col(values, "csat_satisfied_share_180d", n)])
    scores = {"usage": 100 * _mean_available(parts["usage"]),
              "engagement": 100 * _mean_available(parts["engagement"]),
              "sentiment": 100 * sentiment}
    scores["risk"] = (np.full(n, np.nan) if churn_probability is None
                      else 100 * (1.0 - np.asarray(churn_probability, dtype=np.float64)))
    return scores


def blend(components: Mapping[str, np.ndarray], weights: Mapping[str, float] = DEFAULT_WEIGHTS
          ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted mean of the available components.

    Returns:
        ``(health, effective_weights)``: health 0-100 (NaN when no component has data) and, per
        component, the weight actually applied to each row (0 where the component had no data).
    """
    names = [c for c in COMPONENTS if c in components and weights.get(c, 0) > 0]
    stacked = np.vstack([np.asarray(components[c], dtype=np.float64) for c in names])
    w = np.array([weights[c] for c in names], dtype=np.float64)[:, None]
    present = ~np.isnan(stacked)
    applied = np.where(present, w, 0.0)
    total = applied.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        effective = np.where(total > 0, applied / total, 0.0)
        health = np.where(total > 0, np.nansum(np.where(present, stacked, 0) * effective, axis=0),
                          np.nan)
    return health, {c: effective[i] for i, c in enumerate(names)}


def band_labels(values: np.ndarray, bands: Mapping[str, float]) -> list[str | None]:
    """Band of each value: the band with the highest lower bound <= value (None for NaN); a
    value below every bound gets the lowest band."""
    ordered = sorted(bands.items(), key=lambda kv: kv[1])
    lows = np.array([low for _, low in ordered], dtype=np.float64)
    names = [name for name, _ in ordered]
    values = np.asarray(values, dtype=np.float64)
    idx = np.maximum(np.searchsorted(lows, values, side="right") - 1, 0)
    nan = np.isnan(values)
    return [None if nan[i] else names[k] for i, k in enumerate(idx.tolist())]


def numeric_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The numeric columns of a feature frame as float arrays (missing = NaN)."""
    return {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            for c in frame.columns if not isinstance(frame[c].dtype, pd.StringDtype)
            and frame[c].dtype != object}


def health_scores(frame: pd.DataFrame, churn_probability: np.ndarray | None = None,
                  weights: Mapping[str, float] = DEFAULT_WEIGHTS,
                  reference: HealthReference | None = None) -> np.ndarray:
    """The 0-100 health score of each row of a feature frame: rule-only without a probability,
    blended with the model's risk with one."""
    components = component_scores(numeric_columns(frame), churn_probability, reference)
    health, _ = blend(components, weights)
    return health


def rule_risk(frame: pd.DataFrame, reference: HealthReference | None = None) -> np.ndarray:
    """The rule-only health score as a churn-risk score (100 - health; no data = neutral 50)."""
    health = health_scores(frame, reference=reference)
    return 100.0 - np.where(np.isnan(health), 50.0, health)


def log_scaled(frame: pd.DataFrame, config: FeatureConfig | None = None) -> pd.DataFrame:
    """``log_<name>`` = log1p of every fat-tailed count in ``frame`` (as in "Fighting Churn with
    Data": counts spanning orders of magnitude are compared on a log scale)."""
    fat = [s.name for s in catalogue(config) if s.fat_tailed and s.name in frame.columns]
    return pd.DataFrame({f"log_{name}": np.log1p(pd.to_numeric(frame[name], errors="coerce")
                                                 .clip(lower=0).astype("float64"))
                         for name in fat}, index=frame.index)
