"""Reasons: why the model gave an account its churn probability, in words a CSM can act on.

The numbers are LightGBM's TreeSHAP values (``Booster.predict(..., pred_contrib=True)``), computed
by :mod:`serving.treeshap`'s tables (checked against ``pred_contrib`` when the model loads) or by
LightGBM itself: for every row one contribution per feature plus the expected value (the last
column), all on the model's raw (log-odds) scale, summing exactly to the raw score. A positive
contribution pushes the churn probability up.

The words come from the feature catalogue (:data:`features.definitions.CATALOGUE`): its
description and unit, and, when the catalogue declares the same window shifted back (for example
``events_prev_30d`` for ``events_30d``), the change from that previous window::

    Product events in the last 30 days: 12 events, down 60 % from the previous 30 days (30)

Nothing here is specific to today's catalogue: a feature the features team adds is explained
from its declaration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.definitions import CATALOGUE, FeatureSpec, Window

#: Units shown after a number ("3 days"); "%" is formatted separately, these are left out.
_SILENT_UNITS = {"", "%", "currency", "points", "flag"}
#: |contribution| (log-odds) at or above which a reason is "strong" / "moderate"; else "slight".
STRONG = 0.5
MODERATE = 0.15


def _previous_windows() -> dict[str, FeatureSpec]:
    """``{"events_30d": <spec of events_prev_30d>}``: the declared previous window of a window."""
    out: dict[str, FeatureSpec] = {}
    windows = [s for s in CATALOGUE if isinstance(s.compute, Window)]
    for spec in windows:
        c = spec.compute
        if c.offset:  # type: ignore[union-attr]
            continue
        for other in windows:
            o = other.compute
            if (o.source, o.measure, o.days, o.offset) == (  # type: ignore[union-attr]
                    c.source, c.measure, c.days, c.days):  # type: ignore[union-attr]
                out[spec.name] = other
    return out


def format_value(value: Any, spec: FeatureSpec | None) -> str:
    """A feature value as a person reads it: ``"3 days"``, ``"45 %"``, ``"growth"``, ``"no data"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if isinstance(value, str) or (spec is not None and spec.dtype == "category"):
        return str(value)
    number = float(value)
    unit = spec.unit if spec is not None else ""
    if unit == "%":
        return f"{number * 100:.0f} %"
    text = f"{number:,.0f}" if abs(number) >= 100 or number == int(number) else f"{number:.2g}"
    return text if unit in _SILENT_UNITS else f"{text} {unit}"


def _change(value: Any, previous: Any, days: int) -> str:
    if value is None or previous is None:
        return ""
    value, previous = float(value), float(previous)
    if math.isnan(value) or math.isnan(previous):
        return ""
    if previous == 0:
        return "" if value == 0 else f", up from 0 in the previous {days} days"
    pct = (value - previous) / previous * 100
    if abs(pct) < 0.5:
        return f", unchanged from the previous {days} days"
    word = "up" if pct > 0 else "down"
    return f", {word} {abs(pct):.0f} % from the previous {days} days ({previous:,.0f})"


def size_of(contribution: float) -> str:
    magnitude = abs(contribution)
    return "strong" if magnitude >= STRONG else ("moderate" if magnitude >= MODERATE else "slight")


@dataclass(frozen=True)
class Explainer:
    """Turns rows of TreeSHAP contributions into the top reasons of each account."""

    feature_names: tuple[str, ...]
    specs: Mapping[str, FeatureSpec]
    previous: Mapping[str, FeatureSpec]
    descriptions: Mapping[str, str]

    @classmethod
    def for_features(cls, feature_names: list[str],
                     recorded: list[dict[str, Any]] | None = None) -> Explainer:
        """``recorded``: the catalogue stored with the model (used for features we don't know)."""
        specs = {s.name: s for s in CATALOGUE}
        descriptions = {r.get("name"): r.get("description") for r in recorded or []
                        if isinstance(r, dict)}
        descriptions = {n: (specs[n].description if n in specs else descriptions.get(n)) or n
                        for n in feature_names}
        previous = {k: v for k, v in _previous_windows().items() if k in feature_names}
        return cls(tuple(feature_names), specs, previous, descriptions)

    def reasons(self, contributions: np.ndarray, record: Mapping[str, Any], top: int
                ) -> list[dict[str, Any]]:
        """The ``top`` largest contributions of one row (without the bias column), biggest first.

        Each reason: ``feature``, ``value`` (as sent), ``text`` (plain language), ``direction``
        (``raises_risk`` / ``lowers_risk``), ``size`` (strong / moderate / slight) and
        ``contribution`` (log-odds).
        """
        values = contributions[:len(self.feature_names)]
        if top <= 0:
            return []
        order = np.argsort(-np.abs(values), kind="stable")[:top]
        out = []
        for j in order.tolist():
            c = float(values[j])
            if c == 0.0:
                break
            name = self.feature_names[j]
            spec = self.specs.get(name)
            value = record.get(name)
            text = f"{self.descriptions[name]}: {format_value(value, spec)}"
            prev = self.previous.get(name)
            if prev is not None:
                text += _change(value, record.get(prev.name), prev.compute.days)  # type: ignore[union-attr]
            out.append({"feature": name, "value": value, "text": text,
                        "direction": "raises_risk" if c > 0 else "lowers_risk",
                        "size": size_of(c), "contribution": c})
        return out
