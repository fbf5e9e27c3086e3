"""Small hand-made tables whose features are computed by hand in the tests."""

from __future__ import annotations

import pandas as pd

from features.contract import Tables, validate_tables


def hand_tables(**overrides: pd.DataFrame | None) -> Tables:
    frames: dict[str, pd.DataFrame | None] = {
        "accounts": pd.DataFrame({
            "account_id": ["a", "b"], "plan": ["growth", "starter"], "seats": [10, 5],
            "industry": ["retail", "media"], "segment": ["MidMarket", "SMB"],
            "signup_date": ["2024-01-01", None]}),
        "subscriptions": pd.DataFrame({
            "account_id": ["a", "a", "b"], "start_date": ["2024-01-01", "2024-03-08", "2024-02-01"],
            "end_date": ["2024-03-08", None, "2024-06-01"], "mrr": [100, 150, 50]}),
        "usage_events": pd.DataFrame({
            "account_id": ["a", "a", "a", "b", "a"],
            "timestamp": ["2024-03-01T10:00:00", "2024-03-05", "2024-03-10T23:59:00",
                          "2024-03-09", "2024-03-09T12:00"],
            "event": ["report", "export", "report", "report", "report"],
            "user_id": ["u1", "u2", "u1", None, "u1"],
            "quantity": [2, 1, 3, None, 1]}),
        "touchpoints": pd.DataFrame({
            "account_id": ["a", "a", "a"],
            "timestamp": ["2024-03-01", "2024-03-02T09:00", "2024-03-03"],
            "channel": ["call", "ticket", "chat"],
            "initiated_by": ["company", "customer", "customer"],
            "resolved_at": [None, "2024-03-07T15:00", None]}),
        "surveys": pd.DataFrame({
            "account_id": ["a", "a", "a", "a"],
            "timestamp": ["2024-02-01", "2024-03-01", "2024-03-03", "2024-03-04"],
            "kind": ["nps", "nps", "csat", "csat"], "score": [9, 6, None, 5]}),
    }
    frames.update(overrides)
    return validate_tables(Tables(**frames))


def obs(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["account_id", "as_of"])


def row(frame: pd.DataFrame, account: str, as_of: str) -> pd.Series:
    """The one feature row of ``account`` at ``as_of``."""
    hit = frame[(frame.account_id == account) & (frame.as_of == pd.Timestamp(as_of))]
    assert len(hit) == 1
    return hit.iloc[0]
