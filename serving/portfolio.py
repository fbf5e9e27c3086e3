"""The portfolio summary ``GET /v1/portfolio`` answers and the console's portfolio page shows."""

from __future__ import annotations

import datetime as dt
from typing import Any

from features.surveys import QUADRANTS, quadrant_alarms
from serving.settings import ServingSettings
from serving.store import ScoreStore


def portfolio_summary(store: ScoreStore, model_name: str, settings: ServingSettings,
                      as_of: dt.date | None = None) -> dict[str, Any] | None:
    """The band and quadrant distribution of model ``model_name``'s stored scores on ``as_of``
    (default: the latest), the playbook's quadrant alarms, surveys due and revenue at risk; None
    when nothing is stored (for that date).

    Raises:
        StoreError: the store cannot be read.
    """
    summary = store.portfolio(model_name, as_of)
    if summary is None:
        return None
    total = summary["accounts"] or 1
    summary["as_of"] = summary["as_of"].isoformat()
    mapped = {q: n for q, n in summary["quadrants"].items() if q in QUADRANTS}
    on_map = sum(mapped.values())
    # Shares of the accounts on the CSAT x NPS map (those with both answers), and its coverage.
    summary["quadrant_shares"] = {q: round(n / on_map, 4) for q, n in mapped.items()}
    summary["mapped_accounts"] = on_map
    summary["survey_coverage"] = round(on_map / total, 4)
    summary["survey_due_share"] = round(summary["survey_due"] / total, 4)
    summary["alarms"] = quadrant_alarms(summary["quadrants"], summary["accounts"],
                                        settings.churner_alarm, settings.wildcard_alarm)
    return summary
