"""Hand-computed values of the full catalogue (every family), with their edge cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.contract import Tables, validate_tables
from features.definitions import (
    CATALOGUE,
    AccountAttribute,
    FeatureConfig,
    catalogue,
    catalogue_records,
    feature_names,
)
from features.health import log_scaled
from features.pointintime import build_features, family_availability

from .fixtures import hand_tables, obs, row


@pytest.fixture(scope="module")
def built() -> pd.DataFrame:
    return build_features(hand_tables(), obs(("a", "2024-03-10"), ("a", "2024-03-05"),
                                             ("b", "2024-03-10"), ("a", "2024-04-01"),
                                             ("a", "2024-06-15")))


def test_usage_slope_and_volatility(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    # Before 03-10: 2 events on 03-01 (x = -9), 1 on 03-05 (x = -5), 1 on 03-09 (x = -1).
    total, sxy = 4, 2 * -9 + 1 * -5 + 1 * -1
    slope = (90 * sxy - (-4095) * total) / (90 * 247065 - 4095**2)
    assert r.events_slope_90d == pytest.approx(slope * 90 / (total / 90))
    mean = total / 30
    sd = math.sqrt((2**2 + 1 + 1) / 30 - mean**2)
    assert r.events_volatility_30d == pytest.approx(sd / mean)
    assert r.events_180d == 4 and r.active_days_180d == 3
    assert r.distinct_events_90d == 2
    late = row(built, "a", "2024-06-15")  # nothing in the last 90 days (since 03-17)
    assert math.isnan(late.events_slope_90d) and math.isnan(late.events_volatility_30d)
    assert late.events_180d == 7 and late.distinct_events_90d == 0
    assert late.days_since_last_event == (pd.Timestamp("2024-06-15") - pd.Timestamp("2024-03-10")).days


def test_a_steady_account_has_no_slope() -> None:
    days = pd.date_range("2024-01-01", "2024-03-31", freq="D")
    usage = pd.DataFrame({"account_id": "a", "timestamp": days, "event": "report",
                          "user_id": "u1", "quantity": 3})
    r = build_features(hand_tables(usage_events=usage), obs(("a", "2024-04-01"))).iloc[0]
    assert r.events_slope_90d == pytest.approx(0.0, abs=1e-12)
    assert r.events_volatility_30d == pytest.approx(0.0, abs=1e-9)
    rising = usage.assign(quantity=range(1, len(usage) + 1))  # 1, 2, ... 91 events a day
    r = build_features(hand_tables(usage_events=rising), obs(("a", "2024-04-01"))).iloc[0]
    # The last 90 days hold 2..91: slope 1 a day, mean 46.5 -> change over 90 days / mean.
    assert r.events_slope_90d == pytest.approx(90 / 46.5)


def test_touchpoint_windows_cadence_escalation_and_resolution(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    assert r.proactive_touchpoints_30d == 1 and r.reactive_touchpoints_30d == 2
    assert r.check_in_gap_days == 9 - 30  # last check-in 03-01: not due for 21 days
    assert row(built, "a", "2024-06-15").check_in_gap_days == 106 - 30
    # ticket 03-02 09:00 resolved 03-07 15:00 = 126 h; the chat is never resolved.
    assert r.median_resolution_hours_90d == 126
    assert math.isnan(row(built, "a", "2024-03-05").median_resolution_hours_90d)  # not yet resolved
    assert math.isnan(row(built, "a", "2024-06-15").median_resolution_hours_90d)  # out of window
    # the fixture has no escalation column and no reviews: null, not zero
    assert math.isnan(r.escalated_tickets_90d) and math.isnan(r.days_since_last_review)


def test_reviews_escalations_and_median_of_several() -> None:
    touch = pd.DataFrame({
        "account_id": ["a"] * 6,
        "timestamp": ["2024-01-10", "2024-02-01", "2024-02-01T10:00", "2024-02-03", "2024-02-20",
                      "2024-03-01"],
        "channel": ["qbr", "ticket", "ticket", "chat", "email", "ticket"],
        "initiated_by": ["company", "customer", "customer", "customer", "company", "customer"],
        "resolved_at": [None, "2024-02-01T02:00", "2024-02-02T10:00", "2024-02-03T01:00", None,
                        "2024-03-01T05:00"],
        "escalated": [None, 1, 0, 1, None, 1]})
    frame = build_features(hand_tables(touchpoints=touch),
                           obs(("a", "2024-03-01"), ("a", "2024-03-02")))
    r = row(frame, "a", "2024-03-01")
    assert r.days_since_last_review == (pd.Timestamp("2024-03-01") - pd.Timestamp("2024-01-10")).days
    assert r.review_gap_days == r.days_since_last_review - 91
    assert r.days_since_last_proactive == 10  # the email on 02-20
    assert r.escalated_tickets_90d == 2  # 02-01 and 02-03; the 03-01 one is on as_of
    assert r.median_resolution_hours_90d == 2  # 2 h, 24 h, 1 h -> median 2
    assert r.open_tickets == 0
    nxt = row(frame, "a", "2024-03-02")
    assert nxt.escalated_tickets_90d == 3
    assert nxt.median_resolution_hours_90d == pytest.approx((2 + 5) / 2)  # 1, 2, 5, 24


def test_survey_change_due_flags_and_quadrant(built: pd.DataFrame) -> None:
    r = row(built, "a", "2024-03-10")
    assert r.nps_change == 6 - 9 and r.days_since_last_nps == 9
    assert r.csat_satisfied_share_90d == 1.0
    assert r.csat_nps_quadrant == "Wildcard"  # detractor NPS, satisfied with support
    assert r.nps_survey_due == 0 and r.onboarding_survey_due == 0
    b = row(built, "b", "2024-03-10")  # 38 days a customer, never surveyed
    assert b.onboarding_survey_due == 1 and b.nps_survey_due == 0
    assert math.isnan(b.nps_change) and pd.isna(b.csat_nps_quadrant)


@pytest.mark.parametrize(("nps", "csat", "quadrant"), [
    (9, [5, 4], "Advocate"), (8, [1, 2, 5], "VIP-support"), (3, [5], "Wildcard"),
    (6, [2], "Churner")])
def test_every_quadrant(nps: int, csat: list[int], quadrant: str) -> None:
    surveys = pd.DataFrame({"account_id": "a",
                            "timestamp": [f"2024-02-{d:02d}" for d in range(1, len(csat) + 2)],
                            "kind": ["nps"] + ["csat"] * len(csat), "score": [nps, *csat]})
    r = build_features(hand_tables(surveys=surveys), obs(("a", "2024-03-10"))).iloc[0]
    assert r.csat_nps_quadrant == quadrant
    assert math.isnan(r.nps_change)  # a single NPS answer has no change


def test_nps_survey_overdue_after_180_days() -> None:
    surveys = pd.DataFrame({"account_id": ["a", "a"], "timestamp": ["2024-01-20", "2024-03-01"],
                            "kind": ["nps", "csat"], "score": [8, 5]})
    frame = build_features(hand_tables(surveys=surveys),
                           obs(("a", "2024-07-18"), ("a", "2024-07-19")))
    # tenure >= 180 on both dates; the NPS was sent 180 then 181 days before.
    assert row(frame, "a", "2024-07-18").nps_survey_due == 0
    assert row(frame, "a", "2024-07-19").nps_survey_due == 1


def test_mrr_change_and_an_account_that_churned_and_came_back() -> None:
    subs = pd.DataFrame({"account_id": ["a", "a", "b", "b"],
                         "start_date": ["2024-01-01", "2024-03-08", "2023-09-01", "2024-05-01"],
                         "end_date": ["2024-03-08", None, "2024-01-01", None],
                         "mrr": [100, 150, 40, 60], "billing_period_months": [1, 1, 12, 12]})
    frame = build_features(hand_tables(subscriptions=subs),
                           obs(("a", "2024-04-01"), ("a", "2024-03-10"), ("b", "2024-06-01"),
                               ("b", "2024-05-01")))
    assert row(frame, "a", "2024-04-01").mrr_change_90d == pytest.approx(0.5)  # 100 -> 150
    assert math.isnan(row(frame, "a", "2024-03-10").mrr_change_90d)  # no subscription 90 days ago
    back = row(frame, "b", "2024-06-01")  # churned 01-01, came back 05-01 at 60
    assert back.mrr == 60 and back.mrr_change_90d == pytest.approx((60 - 40) / 40)
    assert back.days_to_renewal == (pd.Timestamp("2025-05-01") - pd.Timestamp("2024-06-01")).days
    assert back.tenure_days == (pd.Timestamp("2024-06-01") - pd.Timestamp("2023-09-01")).days
    on_return = row(frame, "b", "2024-05-01")  # the new subscription starts on as_of: not yet
    assert on_return.mrr == 40


def test_unavailable_families_and_columns_are_null_and_reported() -> None:
    tables = hand_tables(touchpoints=None, surveys=None)
    frame = build_features(tables, obs(("a", "2024-03-10")))
    assert family_availability(tables) == frame.attrs["families"] == {
        "usage_depth": True, "usage_frequency": True, "touchpoints": False, "surveys": False,
        "account": True}
    r = frame.iloc[0]
    for spec in CATALOGUE:
        if spec.family in ("touchpoints", "surveys"):
            assert pd.isna(r[spec.name]), spec.name
    assert r.events_30d == 4
    no_users = hand_tables(usage_events=hand_tables().usage_events.drop(columns="user_id"))
    r = build_features(no_users, obs(("a", "2024-03-10"))).iloc[0]
    assert math.isnan(r.active_users_30d) and math.isnan(r.events_per_active_user_30d)
    assert r.events_30d == 4


def test_key_events_and_attributes_from_the_config() -> None:
    base = hand_tables()
    config = FeatureConfig(key_events=("report", "share"), key_event_windows=(7, 30),
                           attributes=(AccountAttribute("region"),
                                       AccountAttribute("born", "years_since", name="age")))
    accounts = base.accounts.assign(region=["eu", "us"], born=pd.to_datetime(["2000-03-10", None]))
    tables = validate_tables(Tables(accounts, base.subscriptions, base.usage_events,
                                    base.touchpoints, base.surveys, feature_config=config))
    frame = build_features(tables, obs(("a", "2024-03-10"), ("b", "2024-03-10")))
    assert list(frame.columns[2:]) == feature_names(config)
    a = row(frame, "a", "2024-03-10")
    # "report" before 03-10: 03-01 (qty 2) and 03-09 (qty 1); within 7 days only 03-09.
    assert (a.key_report_30d, a.key_report_7d, a.key_share_30d) == (3, 1, 0)
    assert a.key_features_used_30d == 1 and a.key_feature_adoption_30d == 0.5
    assert a.region == "eu" and a.age == pytest.approx(8766 / 365.25)  # 2000-03-10 .. 2024-03-10
    b = row(frame, "b", "2024-03-10")
    assert b.key_report_30d == 1 and b.region == "us" and math.isnan(b.age)
    plain = build_features(base, obs(("a", "2024-03-10"))).iloc[0]
    assert math.isnan(plain.key_features_used_30d)  # no key events configured
    with pytest.raises(ValueError, match="clash"):
        FeatureConfig(attributes=(AccountAttribute("plan"),))


def test_catalogue_declares_every_feature_once_with_a_description() -> None:
    names = feature_names()
    assert len(names) == len(set(names))
    for record in catalogue_records():
        assert record["description"] and record["family"] and not str(record["name"]).startswith("_")
    assert catalogue(None) == CATALOGUE


def test_log_scaled_forms_of_fat_tailed_counts(built: pd.DataFrame) -> None:
    logs = log_scaled(built)
    assert logs["log_events_30d"].iloc[0] == pytest.approx(math.log1p(4))
    fat = {s.name for s in CATALOGUE if s.fat_tailed}
    assert set(logs.columns) == {f"log_{n}" for n in fat}


def test_many_snapshot_dates_take_the_windowed_path_with_the_same_values(monkeypatch) -> None:
    from features import pointintime

    days = pd.date_range("2024-03-01", periods=pointintime.MAX_DATES_FOR_CONDITIONAL + 6, freq="D")
    pairs = obs(*[(a, str(d.date())) for d in days for a in ("a", "b")])
    many = build_features(hand_tables(), pairs)  # > MAX_DATES_FOR_CONDITIONAL dates: windowed
    monkeypatch.setattr(pointintime, "MAX_DATES_FOR_CONDITIONAL", 1000)
    conditional = build_features(hand_tables(), pairs)
    pd.testing.assert_frame_equal(many, conditional)
    # hand check on one date: before 03-10, a used report and export (30 d), u1 and u2
    r = row(many, "a", "2024-03-10")
    assert (r.distinct_events_30d, r.active_users_30d) == (2, 2)
    # 03-30: the window [02-29, 03-30) still holds export (03-05) and report (03-01 .. 03-10)
    assert row(many, "a", "2024-03-30").distinct_events_30d == 2
    assert row(many, "b", "2024-03-30").active_users_30d == 0  # b's event has no user


def test_a_feature_built_alone_equals_the_same_feature_in_the_full_catalogue(built) -> None:
    from features.definitions import catalogue_by_name

    specs = catalogue_by_name()
    pairs = built[["account_id", "as_of"]]
    for name in ("csat_nps_quadrant", "check_in_gap_days", "events_slope_90d", "nps_change",
                 "key_feature_adoption_30d", "catalogue_share_30d"):
        alone = build_features(hand_tables(), pairs, specs=[specs[name]])
        assert list(alone.columns) == ["account_id", "as_of", name]
        pd.testing.assert_series_equal(alone[name], built[name], check_names=False)


def test_memory_limit_setting_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("CHURN_FEATURES_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="CHURN_FEATURES_MEMORY_LIMIT must look like 1GB"):
        build_features(hand_tables(), obs(("a", "2024-03-10")))
    monkeypatch.setenv("CHURN_FEATURES_MEMORY_LIMIT", "256MB")
    assert build_features(hand_tables(), obs(("a", "2024-03-10"))).iloc[0].events_30d == 4


def test_the_edge_grid_and_the_probes_give_the_same_features(small_tables, monkeypatch) -> None:
    """Window totals read on the edge grid equal those read at probe rows, on training rows where
    accounts are observed at different subsets of the dates."""
    from features import pointintime
    from features.rows import active_rows

    dates = pd.date_range("2024-03-01", periods=8, freq="MS")
    pairs = active_rows(small_tables, dates, grace_days=30)[["account_id", "as_of"]]
    assert pairs.groupby("account_id").size().nunique() > 1  # uneven subsets of the dates
    paths = {"grid": 0, "probes": 0}
    for name, path in (("grid", "_read_on_grid"), ("probes", "_read_at_probes")):
        real = getattr(pointintime, path)

        def counted(*args, _real=real, _name=name, **kwargs):
            paths[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(pointintime, path, counted)
    on_grid = build_features(small_tables, pairs)  # its lookups scanned in place
    assert paths == {"grid": 4, "probes": 0}  # usage, touchpoints, surveys, the last NPS
    monkeypatch.setattr(pointintime, "IN_PLACE_ACCOUNTS", 0)  # as a large build: tables
    pd.testing.assert_frame_equal(build_features(small_tables, pairs), on_grid)
    monkeypatch.setattr(pointintime, "GRID_ROWS_PER_PROBE", 0)
    at_probes = build_features(small_tables, pairs)
    assert paths == {"grid": 8, "probes": 4}
    pd.testing.assert_frame_equal(on_grid, at_probes, rtol=1e-12)
    assert on_grid["events_30d"].gt(0).mean() > 0.5 and on_grid["days_since_last_event"].notna().any()


def test_the_edge_grid_buckets_days_between_edges_and_falls_back_for_scattered_dates() -> None:
    from features.pointintime import _edge_grid

    observed = pd.DataFrame({"account_id": ["a", "a", "b"], "acc": [0, 0, 1], "day": [10, 20, 20]})
    grid = _edge_grid(observed, [0, 5])  # edges 5, 10, 15, 20
    assert grid is not None and grid.last == 20
    bucket = dict(zip(grid.buckets["day"], grid.buckets["bucket"], strict=True))
    assert (min(bucket), max(bucket)) == (5, 19)  # days before 5 are bucket 0; 20 on are unread
    assert [bucket[d] for d in (5, 9, 10, 14, 15, 19)] == [1, 1, 2, 2, 3, 3]
    reads = {(s, o): p for s, o, p in grid.reads.itertuples(index=False)}
    # C(edge k) sums buckets 0..k, i.e. the days before edge k
    assert reads == {(10, 0): 1, (10, 5): 0, (20, 0): 3, (20, 5): 2}
    spans = grid.spans.set_index("account_id")
    assert (spans.loc["a", "lo"], spans.loc["a", "hi"]) == (0, 3)
    assert (spans.loc["b", "lo"], spans.loc["b", "hi"]) == (2, 3)  # b reads only its own edges
    # 400 accounts, each observed on a date of its own: a grid would span ~180 days of edges each
    scattered = pd.DataFrame({"account_id": [f"x{i}" for i in range(400)], "acc": range(400),
                              "day": range(1000, 1400)})
    assert _edge_grid(scattered, [0, 7, 30, 60, 90, 180]) is None
    assert _edge_grid(scattered.iloc[:0], [0, 30]) is None


def test_recency_reaches_rows_long_before_an_accounts_first_window() -> None:
    """On the edge grid, rows before an account's first window still count for its recency."""
    frame = build_features(hand_tables(), obs(("b", "2024-03-10"), ("a", "2025-01-01")))
    late = row(frame, "a", "2025-01-01")
    assert late.events_180d == 0 and late.days_since_last_event == 297  # last event 2024-03-10
    assert late.last_nps == 6 and late.days_since_last_proactive == 306  # 2024-03-01
