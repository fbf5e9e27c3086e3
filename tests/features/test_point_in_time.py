"""Property tests: a feature at as_of never depends on rows dated on or after as_of, nor on order."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from features.contract import Tables, validate_tables
from features.definitions import AccountAttribute, FeatureConfig
from features.pointintime import build_features

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


#: Independent account sets per example. One feature build covers all of them (a build costs
#: about 1.5 s, mostly Ibis compiling the query, whatever the data size), so the tests check as
#: many generated scenarios as before in a quarter of the builds.
SCENARIOS = 4


def _in(k: int, rows: list[tuple]) -> list[tuple]:
    """``rows`` of scenario ``k``: account ids prefixed, so the scenarios never share an account."""
    return [(f"{k}{r[0]}", *r[1:]) for r in rows]


def make_tables(usage, touch, surveys, subs, scenarios: int = 1) -> Tables:
    one = pd.DataFrame({"account_id": ACCOUNTS, "plan": ["x", "y", "x"], "seats": [3, 5, 8],
                        "signup_date": [BASE, None, BASE + pd.Timedelta(days=50)],
                        "region": ["eu", "us", None],
                        "born": pd.to_datetime(["1990-01-01", None, "1985-06-30"])})
    accounts = one if scenarios == 1 else pd.concat(
        [one.assign(account_id=[f"{k}{a}" for a in ACCOUNTS]) for k in range(scenarios)],
        ignore_index=True)
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


#: One scenario of the first test: its rows, and rows that might be appended later.
with_future = st.fixed_dictionaries({
    "usage": st.lists(usage_row, max_size=40), "touch": st.lists(touch_row, max_size=15),
    "surveys": st.lists(survey_row, max_size=12), "future_usage": st.lists(usage_row, max_size=20),
    "future_touch": st.lists(touch_row, max_size=8),
    "future_surveys": st.lists(survey_row, max_size=8), "new_sub_day": st.integers(0, 150)})


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios=st.lists(with_future, min_size=SCENARIOS, max_size=SCENARIOS),
       as_of=st.sampled_from(AS_OF))
def test_rows_on_or_after_as_of_never_change_features(scenarios, as_of) -> None:
    # One as_of for every scenario: a feature read across accounts (the catalogue size) then
    # sees only rows dated on or after it appended, whichever scenario they belong to.
    before: dict[str, list] = {"usage": [], "touch": [], "surveys": [], "subs": []}
    after: dict[str, list] = {"usage": [], "touch": [], "surveys": [], "subs": []}
    for k, sc in enumerate(scenarios):
        before["usage"] += _in(k, sc["usage"])
        before["touch"] += _in(k, sc["touch"])
        before["surveys"] += _in(k, sc["surveys"])
        before["subs"] += _in(k, BASE_SUBS)
        # Append only rows dated on or after as_of (a new subscription, usage, contacts, answers).
        subs = BASE_SUBS + [("a", BASE + pd.Timedelta(days=sc["new_sub_day"]), None, 999.0)]
        subs = [s for s in subs if s in BASE_SUBS or s[1] >= as_of]
        answered = {(x[0], x[1], x[2]) for x in sc["surveys"]}
        extra_surveys = [s for s in _later(sc["future_surveys"], as_of)
                         if (s[0], s[1], s[2]) not in answered]
        after["usage"] += _in(k, sc["usage"] + _later(sc["future_usage"], as_of))
        after["touch"] += _in(k, sc["touch"] + _later(sc["future_touch"], as_of))
        after["surveys"] += _in(k, sc["surveys"] + extra_surveys)
        after["subs"] += _in(k, subs)
    obs = pd.DataFrame([(f"{k}{a}", as_of) for k in range(SCENARIOS) for a in ACCOUNTS],
                       columns=["account_id", "as_of"])
    assert_frame_equal(build_features(make_tables(**before, scenarios=SCENARIOS), obs),
                       build_features(make_tables(**after, scenarios=SCENARIOS), obs))


plain = st.fixed_dictionaries({
    "usage": st.lists(usage_row, min_size=1, max_size=40),
    "touch": st.lists(touch_row, max_size=15), "surveys": st.lists(survey_row, max_size=12)})


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios=st.lists(plain, min_size=SCENARIOS, max_size=SCENARIOS),
       seed=st.integers(0, 2**16))
def test_reordering_input_rows_changes_nothing(scenarios, seed) -> None:
    rows = {name: [r for k, sc in enumerate(scenarios) for r in _in(k, sc[name])]
            for name in ("usage", "touch", "surveys")}
    tables = make_tables(**rows, subs=[s for k in range(SCENARIOS) for s in _in(k, BASE_SUBS)],
                         scenarios=SCENARIOS)
    shuffled = Tables(**{name: tables.get(name).sample(frac=1.0, random_state=seed).reset_index(drop=True)
                         for name in tables.available}, feature_config=CONFIG)
    obs = pd.DataFrame([(f"{k}{a}", t) for k in range(SCENARIOS) for a in ACCOUNTS for t in AS_OF],
                       columns=["account_id", "as_of"])
    assert_frame_equal(build_features(tables, obs), build_features(validate_tables(shuffled), obs))
