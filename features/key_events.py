"""Key events when a data set declares none: its most frequent event types.

A mapping names the product's most valuable features (``features.key_events``); each gets its own
windowed counts and trend (:mod:`features.definitions`). Without them the catalogue has only
event totals, while churn often depends on which features are used, so a data set that declares
none gets its most frequent event types, a bounded number. The choice depends on how often each
event occurs, never on the labels, and is stored with the model so that scoring builds the same
features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from features.contract import Tables, on_driver

#: At most this many event types get their own features when none are declared.
MAX_DEFAULT_KEY_EVENTS = 8
#: Their windows (days): the last month and the last quarter, besides the 30-day trend.
DEFAULT_KEY_EVENT_WINDOWS = (30, 90)


def frequent_events(usage: pd.DataFrame | Any, n: int = MAX_DEFAULT_KEY_EVENTS
                    ) -> tuple[str, ...]:
    """The ``n`` event types with the most uses (quantities summed; ties by name). ``usage`` is a
    pandas frame or events held by Spark (which count their own uses)."""
    if on_driver(usage):
        uses = usage["quantity"].fillna(1.0).groupby(usage["event"], observed=True).sum().items()
    else:
        uses = usage.event_uses().items()
    ranked = sorted(uses, key=lambda kv: (-kv[1], str(kv[0])))
    return tuple(str(event) for event, _ in ranked[:n])


def with_key_events(tables: Tables, key_events: Sequence[str] | None = None,
                    windows: Sequence[int] | None = None) -> Tables:
    """``tables`` with key events: ``key_events`` and ``windows`` (a model's own), else those the
    data set declares, else its most frequent event types over :data:`DEFAULT_KEY_EVENT_WINDOWS`;
    unchanged without usage events."""
    config = tables.feature_config
    if key_events is None:
        if config.key_events or tables.usage_events is None or tables.usage_events.empty:
            return tables
        key_events, windows = frequent_events(tables.usage_events), DEFAULT_KEY_EVENT_WINDOWS
    windows = tuple(windows) if windows is not None else config.key_event_windows
    if (tuple(key_events), windows) == (config.key_events, config.key_event_windows):
        return tables
    return dataclasses.replace(tables, feature_config=dataclasses.replace(
        config, key_events=tuple(key_events), key_event_windows=windows))
