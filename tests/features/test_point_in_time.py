"""Property tests: a feature at as_of never depends on rows dated on or after as_of, nor on order."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from features.builder import build_features
from features.contract import Tables, validate_tables
from features.definitions import AccountAttribute, FeatureConfig

BASE = pd.Timestamp("2024-01-01")
ACCOUNTS = ["a", "b", "c"]
AS_OF = [BASE + pd.Timedelta(days=d) for d in (40, 75, 120)]
EVENTS = ["report", "export", "share", "alert"]

day = st.integers(min_value=0, max_value=150)
seconds = st.integers(min_value=0, max_value=86_399)
account = st.sampled_from(ACCOUNTS)


def _ts(d: int, s: int) -> pd.Timestamp:
    return BASE + pd.Timedelta(days=d, seconds=s)


usage_row = st.builds(lambda a, d, s, e, u, q: (a, _ts(d, s), e, u, q), account, day, seconds,
                      st.sampled_from(EVENTS), st.sampled_from(["u1", "u2", "u3", None]),
                      st.integers(1, 5))
touch_row = st.builds(lambda a, d, s, by, r, qbr, esc: (
    a, _ts(d, s), ("qbr" if qbr else "call") if by == "company" else "ticket", by,
    None if r is None else _ts(d + r, s + 3600 * r), esc if by == "customer" else None),
    account, day, seconds, st.sampled_from(["company", "customer"]),
    st.one_of(st.none(), st.integers(0, 20)), st.booleans(), st.sampled_from([0, 1, None]))
survey_row = st.builds(lambda a, d, k, sc: (a, _ts(d, 0), k, None if sc is None else
                                            (sc if k == "nps" else 1 + sc % 5)),
                       account, day, st.sampled_from(["nps", "csat"]),
                       st.one_of(st.none(), st.integers(0, 10)))


#: Key events and extra attributes, so that the configured features are covered too.
CONFIG = FeatureConfig(key_events=("report", "alert"), key_event_windows=(7, 30),
                       attributes=(AccountAttribute("region"),
                                   AccountAttribute("born", "years_since", name="age")))


def make_tables(usage, touch, surveys, subs) -> Tables:
    accounts = pd.DataFrame({"account_id": ACCOUNTS, "plan": ["x", "y", "x"], "seats": [3, 5, 8],
                             "signup_date": [BASE, None, BASE + pd.Timedelta(days=50)],
                             "region": ["eu", "us", None],
                             "born": pd.to_datetime(["1990-01-01", None, "1985-06-30"])})
    subscriptions = pd.DataFrame(subs, columns=["account_id", "start_date", "end_date", "mrr"])
    sv = pd.DataFrame(surveys, columns=["account_id", "timestamp", "kind", "score"])
    sv = sv.drop_duplicates(["account_id", "timestamp", "kind"])
    return validate_tables(Tables(
        accounts=accounts, subscriptions=subscriptions,
        usage_events=pd.DataFrame(usage, columns=["account_id", "timestamp", "event", "user_id",
                                                  "quantity"]),
        touchpoints=pd.DataFrame(touch, columns=["account_id", "timestamp", "channel",
                                                 "initiated_by", "resolved_at", "escalated"]),
        surveys=sv, feature_config=CONFIG))


BASE_SUBS = [(a, BASE + pd.Timedelta(days=i * 10), None, 10.0 * (i + 1))
             for i, a in enumerate(ACCOUNTS)]
OBS = pd.DataFrame([(a, t) for a in ACCOUNTS for t in AS_OF], columns=["account_id", "as_of"])


def _later(rows: list[tuple], cutoff: pd.Timestamp) -> list[tuple]:
    return [r for r in rows if r[1] >= cutoff]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usage=st.lists(usage_row, max_size=40), touch=st.lists(touch_row, max_size=15),
       surveys=st.lists(survey_row, max_size=12), future_usage=st.lists(usage_row, max_size=20),
       future_touch=st.lists(touch_row, max_size=8), future_surveys=st.lists(survey_row, max_size=8),
       new_sub_day=st.integers(0, 150), as_of=st.sampled_from(AS_OF))
def test_rows_on_or_after_as_of_never_change_features(usage, touch, surveys, future_usage,
                                                      future_touch, future_surveys, new_sub_day,
                                                      as_of) -> None:
    obs = OBS[OBS.as_of == as_of]
    before = build_features(make_tables(usage, touch, surveys, BASE_SUBS), obs)
    # Append only rows dated on or after as_of (a new subscription, usage, contacts, answers).
    subs = BASE_SUBS + [("a", BASE + pd.Timedelta(days=new_sub_day), None, 999.0)]
    subs = [s for s in subs if s in BASE_SUBS or s[1] >= as_of]
    extra_surveys = [s for s in _later(future_surveys, as_of)
                     if (s[0], s[1], s[2]) not in {(x[0], x[1], x[2]) for x in surveys}]
    after = build_features(make_tables(usage + _later(future_usage, as_of),
                                       touch + _later(future_touch, as_of),
                                       surveys + extra_surveys, subs), obs)
    assert_frame_equal(before, after)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(usage=st.lists(usage_row, min_size=1, max_size=40), touch=st.lists(touch_row, max_size=15),
       surveys=st.lists(survey_row, max_size=12), seed=st.integers(0, 2**16))
def test_reordering_input_rows_changes_nothing(usage, touch, surveys, seed) -> None:
    tables = make_tables(usage, touch, surveys, BASE_SUBS)
    shuffled = Tables(**{name: tables.get(name).sample(frac=1.0, random_state=seed).reset_index(drop=True)
                         for name in tables.available}, feature_config=CONFIG)
    assert_frame_equal(build_features(tables, OBS), build_features(validate_tables(shuffled), OBS))
