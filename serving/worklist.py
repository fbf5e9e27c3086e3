"""The CS worklist: the served model's latest stored scores, filtered, ranked and paged.

One function, :func:`worklist`, answers ``GET /v1/accounts`` and the console's worklist page. The
rows are the scores of :meth:`ScoreStore.snapshot` (the latest date, the most recently computed
version of the model on it); each carries the change in churn probability since the account's
previous stored score (:meth:`ScoreStore.previous`). Pages are cut by a keyset cursor: the sort
key of the last row sent plus the snapshot it came from, so paging is stable while new scores are
written.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from serving.store import ScoreStore, Snapshot

Sort = Literal["revenue_at_risk", "churn_probability", "health", "risk_change"]
#: Each order, as (the row's value, ascending?): the most urgent account first.
ORDERS: dict[str, tuple[Callable[[dict[str, Any]], float | None], bool]] = {
    "revenue_at_risk": (lambda r: r["revenue_at_risk"], False),
    "churn_probability": (lambda r: r["churn_probability"], False),
    "health": (lambda r: r["health_score"], True),  # least healthy first
    "risk_change": (lambda r: r["risk_change"], False),  # fastest rising first
}
#: A change in churn probability smaller than this (either way) is "steady".
STEADY = 0.01


class CursorError(ValueError):
    """The cursor is not one this server gave for this sort and these scores."""


@dataclass(frozen=True)
class Filters:
    risk_band: str | None = None
    health_band: str | None = None
    quadrant: str | None = None
    survey_due: bool | None = None
    renewal_within_days: int | None = None
    owner: str | None = None


def trend(change: float | None) -> str | None:
    """``rising``, ``falling`` or ``steady`` for a change in churn probability (None: no earlier
    score)."""
    if change is None:
        return None
    return "steady" if abs(change) < STEADY else ("rising" if change > 0 else "falling")


def _row(r: dict[str, Any], previous: float | None) -> dict[str, Any]:
    change = None if previous is None else r["churn_probability"] - previous
    reasons = r["reasons"] or []
    renewal = r["renewal_date"]
    return {
        "account_id": r["account_id"], "churn_probability": r["churn_probability"],
        "risk_band": r["risk_band"], "health_score": r["health_score"],
        "health_band": r["health_band"], "quadrant": r["quadrant"],
        "survey_due": bool(r["survey_due"]), "owner": r["owner"], "mrr": r["mrr"],
        "revenue_at_risk": r["revenue_at_risk"],
        "renewal_date": None if renewal is None else renewal.isoformat(),
        "days_to_renewal": None if renewal is None else (renewal - r["as_of"]).days,
        "top_reason": reasons[0]["text"] if reasons else None,
        "previous_churn_probability": previous, "risk_change": change, "trend": trend(change),
    }


def _key(row: dict[str, Any], sort: str) -> tuple[bool, float, str]:
    """The row's place in ``sort`` order: missing values last, ties by account id."""
    value, ascending = ORDERS[sort]
    v = value(row)
    return (v is None, 0.0 if v is None else (v if ascending else -v), row["account_id"])


def _encode(snap: Snapshot, sort: str, key: tuple[bool, float, str]) -> str:
    raw = json.dumps([snap.as_of.isoformat(), snap.model_version, sort, *key])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[dt.date, str, tuple[bool, float, str]]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        as_of, version, sorted_by, missing, value, account = json.loads(raw)
        key = (bool(missing), float(value), str(account))
        day = dt.date.fromisoformat(as_of)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CursorError("The cursor is not valid; start again without it.") from exc
    if sorted_by != sort:
        raise CursorError(f"The cursor belongs to sort={sorted_by}, not sort={sort}.")
    return day, str(version), key


def worklist(store: ScoreStore, model_name: str, *, sort: Sort = "revenue_at_risk",
             filters: Filters = Filters(), limit: int = 50, cursor: str | None = None
             ) -> dict[str, Any] | None:
    """A page of the worklist: ``{"as_of", "model_version", "sort", "total", "accounts",
    "next_cursor"}``; None when model ``model_name`` has no stored scores.

    Raises:
        CursorError: ``cursor`` is malformed or belongs to another sort.
        StoreError: the store cannot be read.
    """
    after = None
    if cursor:
        as_of, version, after = _decode(cursor, sort)
        snap = Snapshot(model_name, as_of, version)
    else:
        snap = store.snapshot(model_name)
        if snap is None:
            return None
    previous = store.previous(snap)
    rows = [_row(r, previous.get(r["account_id"]))
            for r in store.latest(snap, **filters.__dict__)]
    rows.sort(key=lambda r: _key(r, sort))
    total = len(rows)
    if after is not None:
        rows = [r for r in rows if _key(r, sort) > after]
    page = rows[:limit]
    more = len(rows) > limit
    return {"as_of": snap.as_of.isoformat(), "model_name": model_name,
            "model_version": snap.model_version or None, "sort": sort, "total": total,
            "accounts": page,
            "next_cursor": _encode(snap, sort, _key(page[-1], sort)) if more else None}
