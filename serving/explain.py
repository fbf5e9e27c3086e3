"""Reasons: why the model gave an account its churn probability, in words a CSM can act on.

The numbers are LightGBM's TreeSHAP values (``Booster.predict(..., pred_contrib=True)``), computed
by :mod:`serving.treeshap`'s tables (checked against ``pred_contrib`` when the model loads) or by
LightGBM itself: for every row one contribution per feature plus the expected value (the last
column), all on the model's raw (log-odds) scale, summing exactly to the raw score. A positive
contribution pushes the churn probability up.

One reason per *signal* (:attr:`features.definitions.FeatureSpec.signal`): the features that
measure the same behaviour (events over 7, 30 and 90 days, their trend) add their contributions
into one reason, told by the member that moved the score most. The words come from the feature
catalogue: its description, the value in the feature's own unit, and, when the catalogue declares
the same window shifted back (``events_prev_30d`` for ``events_30d``), the change from it; the
direction at the end always agrees with the sign of the reason's contribution::

    Product events in the last 30 days: 12 events, down 60 % from the previous 30 days (30);
    raises the churn risk

Nothing here is specific to today's catalogue: a feature the features team adds is explained
from its declaration, and a data set's own features (key events, attributes) from the catalogue
stored with the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.definitions import CATALOGUE, FeatureSpec, Window

#: |contribution| (log-odds) at or above which a reason is "strong" / "moderate"; else "slight".
STRONG = 0.5
MODERATE = 0.15
RAISES, LOWERS = "raises the churn risk", "lowers the churn risk"


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


@dataclass(frozen=True)
class Display:
    """How a feature's value reads: its unit and whether it is a signed change."""

    unit: str = ""
    dtype: str = "float"
    change: bool = False

    @classmethod
    def of(cls, spec: FeatureSpec | Mapping[str, Any] | None) -> Display:
        if spec is None:
            return cls()
        if isinstance(spec, FeatureSpec):
            unit, dtype, aggregation = spec.unit, spec.dtype, spec.aggregation
        else:
            unit, dtype = str(spec.get("unit") or ""), str(spec.get("dtype") or "float")
            aggregation = str(spec.get("aggregation") or "")
        return cls(unit, dtype, aggregation in ("change", "least-squares slope"))


def _number(number: float) -> str:
    if number == int(number) and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:.2g}"


def format_value(value: Any, spec: FeatureSpec | Mapping[str, Any] | Display | None) -> str:
    """A feature value as a person reads it: ``"3 days"``, ``"45 %"``, ``"-20 %"`` (a change),
    ``"0.8 users per seat"``, ``"yes"`` (a flag), ``"growth"``, ``"no data"``."""
    display = spec if isinstance(spec, Display) else Display.of(spec)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if isinstance(value, str) or display.dtype == "category":
        return str(value)
    number = float(value)
    unit = display.unit
    if unit == "flag":
        return "yes" if number > 0 else "no"
    if unit == "%":
        text = f"{number * 100:,.0f} %"
        return f"+{text}" if display.change and number > 0 else text
    if unit in ("", "currency", "points", "ratio"):
        return _number(number)
    singular = unit[:-1] if unit.endswith("s") and " " not in unit else unit
    return f"{_number(number)} {singular if number == 1 else unit}"


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
    displays: tuple[Display, ...]
    descriptions: tuple[str, ...]
    previous: Mapping[str, FeatureSpec]
    #: The signal of each feature, as an index into :attr:`signals`.
    signal_of: np.ndarray
    signals: tuple[str, ...]

    @classmethod
    def for_features(cls, feature_names: list[str],
                     recorded: list[dict[str, Any]] | None = None) -> Explainer:
        """``recorded``: the catalogue stored with the model (used for features we don't know)."""
        known = {s.name: s for s in CATALOGUE}
        stored = {r.get("name"): r for r in recorded or [] if isinstance(r, dict)}
        specs: list[FeatureSpec | Mapping[str, Any] | None] = [
            known.get(n) or stored.get(n) for n in feature_names]
        descriptions = tuple(
            ((s.short or s.description) if isinstance(s, FeatureSpec)
             else (s or {}).get("short") or (s or {}).get("description")) or n
            for n, s in zip(feature_names, specs, strict=True))
        signal_names = [s.signal_name if isinstance(s, FeatureSpec)
                        else str((s or {}).get("signal") or n)
                        for n, s in zip(feature_names, specs, strict=True)]
        signals = tuple(dict.fromkeys(signal_names))
        index = {s: i for i, s in enumerate(signals)}
        previous = {k: v for k, v in _previous_windows().items() if k in feature_names}
        return cls(tuple(feature_names), tuple(Display.of(s) for s in specs), descriptions,
                   previous, np.array([index[s] for s in signal_names], dtype=np.int64), signals)

    def reasons(self, contributions: np.ndarray, record: Mapping[str, Any], top: int
                ) -> list[dict[str, Any]]:
        """The ``top`` signals with the largest summed contributions of one row (without the
        bias column), biggest first.

        Each reason: ``signal``, ``feature`` (of the members sent, the one that moved the score
        most) and its ``value`` (as sent), ``features`` (every member of the signal), ``text`` (plain
        language), ``direction`` (``raises_risk`` / ``lowers_risk``), ``size`` (strong /
        moderate / slight) and ``contribution`` (log-odds, the members' sum).
        """
        if top <= 0:
            return []
        values = contributions[:len(self.feature_names)]
        grouped = np.bincount(self.signal_of, weights=values, minlength=len(self.signals))
        out = []
        for g in np.argsort(-np.abs(grouped), kind="stable")[:top].tolist():
            c = float(grouped[g])
            if c == 0.0:
                break
            members = np.flatnonzero(self.signal_of == g)
            out.append(self._reason(self._teller(members, values, record), c, record, members))
        return out

    def _teller(self, members: np.ndarray, values: np.ndarray, record: Mapping[str, Any]) -> int:
        """The member a reason is told by: of the features sent, the one that moved the score
        most (a value reads better than "no data"); of all, when none was sent."""
        sent = [m for m in members.tolist() if record.get(self.feature_names[m]) is not None]
        pool = np.asarray(sent or members.tolist())
        return int(pool[np.argmax(np.abs(values[pool]))])

    def _reason(self, j: int, contribution: float, record: Mapping[str, Any],
                members: np.ndarray) -> dict[str, Any]:
        name = self.feature_names[j]
        value = record.get(name)
        text = f"{self.descriptions[j]}: {format_value(value, self.displays[j])}"
        prev = self.previous.get(name)
        if prev is not None:
            text += _change(value, record.get(prev.name), prev.compute.days)  # type: ignore[union-attr]
        raises = contribution > 0
        return {"signal": self.signals[self.signal_of[j]], "feature": name, "value": value,
                "features": [self.feature_names[m] for m in members.tolist()],
                "text": f"{text}; {RAISES if raises else LOWERS}",
                "direction": "raises_risk" if raises else "lowers_risk",
                "size": size_of(contribution), "contribution": contribution}
