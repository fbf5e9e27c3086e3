"""Hand-computed feature values on a small fixture, including the edge cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.definitions import CATALOGUE, feature_names
from features.pointintime import build_features

from .fixtures import hand_tables, obs, row


@pytest.fixture(scope="module")
def built() -> pd.DataFrame:
    return build_features(hand_tables(), obs(("a", "2024-03-10"), ("a", "2024-03-05"),
                                             ("b", "2024-03-10"), ("a", "2024-04-01")))


def test_output_keys_order_and_columns(built: pd.DataFrame) -> None:
    assert list(built.columns) == ["account_id", "as_of", *feature_names()]
    assert list(built.account_id) == ["a", "a", "b", "a"]
    assert list(built.as_of.dt.strftime("%m-%d")) == ["03-10", "03-05", "03-10", "04-01"]


def test_usage_frequency(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    # Before 03-10: 03-01 (qty 2), 03-05 (1), 03-09 (1); the event on 03-10 itself is excluded.
    assert r.events_30d == 4
    assert r.events_7d == 2  # 03-03 .. 03-09
    assert r.active_days_30d == 3
    assert r.days_since_last_event == 1
    assert math.isnan(r.events_trend_30d)  # nothing in the previous 30 days: no trend
    april = row(built, "a", "2024-04-01")
    assert april.events_30d == 4 + 3 - 2  # 03-02 .. 03-31 drops 03-01, adds 03-10
    assert april.events_prev_30d == 2
    assert april.events_trend_30d == pytest.approx((5 - 2) / 2)
    assert april.events_7d == 0


def test_usage_depth(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    assert r.distinct_events_30d == 2
    assert r.active_users_30d == 2
    assert r.active_users_per_seat_30d == pytest.approx(0.2)
    assert r.events_per_active_user_30d == pytest.approx(2.0)
    assert r.catalogue_share_30d == 1.0
    b = row(built, "b", "2024-03-10")
    assert b.distinct_events_30d == 1 and b.catalogue_share_30d == 0.5
    assert b.active_users_30d == 0  # the event has no user_id
    early = row(built, "a", "2024-03-05")
    assert early.distinct_events_30d == 1 and early.catalogue_share_30d == 1.0  # only "report" seen


def test_touchpoints(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    assert r.proactive_touchpoints_90d == 1
    assert r.reactive_touchpoints_90d == 2
    assert r.days_since_last_proactive == 9
    assert r.open_tickets == 1  # the chat is never resolved, the ticket was resolved on 03-07
    early = row(built, "a", "2024-03-05")
    assert early.open_tickets == 2
    b = row(built, "b", "2024-03-10")
    assert b.proactive_touchpoints_90d == 0 and math.isnan(b.days_since_last_proactive)


def test_surveys(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    assert r.last_nps == 6 and r.nps_bucket == "detractor"
    assert r.csat_satisfied_share_180d == 1.0  # one CSAT answered (5); one unanswered
    assert r.survey_response_rate_365d == pytest.approx(3 / 4)
    assert r.days_since_last_survey == 6
    b = row(built, "b", "2024-03-10")
    assert math.isnan(b.last_nps) and pd.isna(b.nps_bucket)


def test_survey_on_the_boundary_is_excluded() -> None:
    frame = build_features(hand_tables(), obs(("a", "2024-03-01"), ("a", "2024-03-02")))
    assert row(frame, "a", "2024-03-01").last_nps == 9  # the 03-01 answer is not before 03-01
    assert row(frame, "a", "2024-03-01").nps_bucket == "promoter"
    assert row(frame, "a", "2024-03-02").last_nps == 6


def test_account_features(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    assert r.tenure_days == (pd.Timestamp("2024-03-10") - pd.Timestamp("2024-01-01")).days
    assert r.mrr == 150  # the upgrade started 03-08
    assert row(built, "a", "2024-03-05").mrr == 100
    assert r.plan == "growth" and r.seats == 10 and r.segment == "MidMarket"
    b = row(built, "b", "2024-03-10")
    assert b.tenure_days == 38  # no signup date: first subscription start


def test_account_with_no_events_gets_zero_counts_not_nulls() -> None:
    tables = hand_tables(usage_events=hand_tables().usage_events.query("account_id == 'a'"))
    b = row(build_features(tables, obs(("b", "2024-03-10"))), "b", "2024-03-10")
    assert b.events_30d == 0 and b.active_days_30d == 0 and b.distinct_events_30d == 0
    assert math.isnan(b.days_since_last_event)


@pytest.mark.parametrize("missing", ["usage_events", "touchpoints", "surveys"])
def test_missing_table_gives_null_family(missing: str) -> None:
    tables = hand_tables(**{missing: None})
    frame = build_features(tables, obs(("a", "2024-03-10")))
    families = {"usage_events": ("usage_depth", "usage_frequency"),
                "touchpoints": ("touchpoints",), "surveys": ("surveys",)}[missing]
    for spec in CATALOGUE:
        value = frame.iloc[0][spec.name]
        if spec.family in families:
            assert pd.isna(value), spec.name
    assert frame.iloc[0].tenure_days == 69


def test_duplicate_and_non_date_observations_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate observation"):
        build_features(hand_tables(), obs(("a", "2024-03-10"), ("a", "2024-03-10")))
    with pytest.raises(ValueError, match="must be a date"):
        build_features(hand_tables(), obs(("a", "2024-03-10T12:00")))
