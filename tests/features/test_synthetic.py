"""Tests of the synthetic customer base: determinism, the contract, realism and writing to disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import TABLES, validate_tables
from features.sources import load_tables
from features.synthetic import EVENTS, PLANS, generate, write_tables

SMALL = {"accounts": 80, "months": 8, "seed": 3}
START = pd.Timestamp("2024-01-01")


@pytest.fixture(scope="module")
def small():
    return generate(**SMALL)


@pytest.fixture(scope="module")
def default_run(default_tables):
    """The default-size data (shared with the other test modules through conftest)."""
    return (default_tables,)


def _spells(subs: pd.DataFrame) -> pd.DataFrame:
    """Merge contiguous subscription rows (plan changes) into spells: account_id, start, end."""
    subs = subs.sort_values(["account_id", "start_date"]).reset_index(drop=True)
    prev_end = subs.groupby("account_id")["end_date"].shift()
    new = prev_end.isna() | (subs["start_date"] != prev_end)
    far = pd.Timestamp("2200-01-01")  # open = NaT; groupby "last" would skip it
    spells = subs.assign(end=subs["end_date"].fillna(far)).groupby(new.cumsum()).agg(
        account_id=("account_id", "first"), start=("start_date", "first"), end=("end", "max"))
    spells["end"] = spells["end"].where(spells["end"] < far)
    return spells.reset_index(drop=True)


def _outside_spells(events: pd.DataFrame, spells: pd.DataFrame, column: str) -> pd.Series:
    """Mask of rows of ``events`` whose ``column`` lies outside every [start, end) spell."""
    left = events[["account_id", column]].reset_index().sort_values(column)
    right = spells.sort_values("start")
    joined = pd.merge_asof(left, right, left_on=column, right_on="start", by="account_id",
                           direction="backward").set_index("index").sort_index()
    inside = joined["start"].notna() & (joined["end"].isna() | (joined[column] < joined["end"]))
    return ~inside


def test_same_seed_gives_identical_tables(small):
    again = generate(**SMALL)
    for spec in TABLES:
        pd.testing.assert_frame_equal(small.get(spec.name), again.get(spec.name))


def test_different_seed_differs(small):
    other = generate(**{**SMALL, "seed": SMALL["seed"] + 1})
    assert not small.accounts.equals(other.accounts)
    assert not small.usage_events.head(1000).equals(other.usage_events.head(1000))


def test_passes_validation_and_ends_the_day_before_start_plus_months(small):
    validate_tables(small)
    end = START + pd.DateOffset(months=SMALL["months"])
    assert small.extract_date().date == end - pd.Timedelta(days=1)
    for spec in TABLES:
        frame = small.get(spec.name)
        for col in spec.columns:
            if col.kind in ("date", "datetime"):
                assert (frame[col.name].dropna() < end).all(), (spec.name, col.name)


def test_every_table_present_with_contract_columns(small):
    for spec in TABLES:
        frame = small.get(spec.name)
        assert frame is not None and len(frame) > 0, spec.name
        assert list(frame.columns) == [c.name for c in spec.columns], spec.name


def test_accounts_look_like_a_saas_customer_base(default_run):
    acc = default_run[0].accounts
    assert acc["account_id"].str.fullmatch(r"A\d{5}").all()
    shares = acc["plan"].value_counts(normalize=True)
    assert set(shares.index) == set(PLANS)
    assert 0.45 < shares["starter"] < 0.65 and 0.25 < shares["growth"] < 0.45
    assert 0.05 < shares["enterprise"] < 0.16
    bounds = {"starter": (3, 10), "growth": (10, 40), "enterprise": (40, 200)}
    for plan, (low, high) in bounds.items():
        seats = acc.loc[acc["plan"] == plan, "seats"]
        assert seats.between(low, high).all(), plan
    segment = {"starter": "SMB", "growth": "MidMarket", "enterprise": "Enterprise"}
    assert (acc["segment"] == acc["plan"].map(segment)).all()
    assert 5 <= acc["industry"].nunique() <= 6
    existing = acc["signup_date"] < START
    assert 0.5 < existing.mean() < 0.7
    assert (acc["signup_date"] >= START - pd.Timedelta(days=731)).all()


def test_subscriptions_are_spells_with_plan_changes_and_win_backs(default_run):
    tables = default_run[0]
    subs = tables.subscriptions.sort_values(["account_id", "start_date"])
    # At most one open row per account, and it is the account's last.
    open_rows = subs[subs["end_date"].isna()]
    assert not open_rows["account_id"].duplicated().any()
    assert set(open_rows.index) <= set(subs.groupby("account_id").tail(1).index)
    prev_end = subs.groupby("account_id")["end_date"].shift()
    prev_mrr = subs.groupby("account_id")["mrr"].shift()
    following = subs[prev_end.notna()]
    gap = (following["start_date"] - prev_end[prev_end.notna()]).dt.days
    assert ((gap == 0) | gap.between(60, 200)).all()  # plan change or win-back, never overlap
    changes = gap == 0
    assert changes.sum() > 10 and (gap > 0).sum() > 3
    assert (following.loc[changes.to_numpy(), "mrr"]
            != prev_mrr[prev_end.notna()][changes.to_numpy()]).all()
    assert (subs["mrr"] > 0).all()
    first = subs.groupby("account_id").head(1).set_index("account_id")["start_date"]
    signup = tables.accounts.set_index("account_id")["signup_date"]
    assert (first == signup.loc[first.index]).all()
    # Monthly renewals: every end (churn or plan change) falls on a monthly anniversary of the
    # spell's first day (the month's last day when that day does not exist).
    new_spell = prev_end.isna() | (subs["start_date"] != prev_end)
    anchor = subs["start_date"].where(new_spell).ffill()
    ended = subs["end_date"].notna()
    end, anchor = subs.loc[ended, "end_date"], anchor[ended]
    assert (end.dt.day == np.minimum(anchor.dt.day, end.dt.days_in_month)).all()


def test_monthly_churn_rate_is_plausible(default_run):
    tables = default_run[0]
    spells = _spells(tables.subscriptions)
    end = tables.extract_date().date + pd.Timedelta(days=1)
    churned = spells["end"].notna().sum()
    exposure = (spells["end"].fillna(end) - spells["start"].clip(lower=START)).dt.days.clip(lower=0)
    monthly = churned / (exposure.sum() / 30.44)
    assert 0.015 < monthly < 0.04, monthly


def test_usage_only_while_subscribed(small):
    spells = _spells(small.subscriptions)
    usage = small.usage_events
    assert not _outside_spells(usage, spells, "timestamp").any()
    tp = small.touchpoints
    assert not _outside_spells(tp, spells, "timestamp").any()


def test_usage_rows_are_per_account_day_user_event(small):
    usage = small.usage_events
    assert set(usage["event"]) <= set(EVENTS) and usage["event"].nunique() >= 10
    assert (usage["quantity"] >= 1).all() and (usage["quantity"] == usage["quantity"].round()).all()
    assert (usage["user_id"].str.split("-u").str[0] == usage["account_id"]).all()
    day = usage["timestamp"].dt.normalize()
    assert not pd.concat([usage[["account_id", "user_id", "event"]], day], axis=1).duplicated().any()
    # Mostly weekday use.
    assert (day.dt.day_of_week < 5).mean() > 0.8


def test_touchpoints_proactive_and_reactive(small):
    tp = small.touchpoints
    company = tp[tp["initiated_by"] == "company"]
    customer = tp[tp["initiated_by"] == "customer"]
    assert set(company["channel"]) <= {"call", "email", "meeting"} and len(company) > 0
    assert set(customer["channel"]) == {"ticket", "chat"}
    assert company["resolved_at"].isna().all()
    resolved = customer["resolved_at"].notna()
    assert 0.8 < resolved.mean() < 1.0
    assert (customer.loc[resolved, "resolved_at"] >= customer.loc[resolved, "timestamp"]).all()


def test_surveys_nps_and_csat_distributions(default_run):
    surveys = default_run[0].surveys
    assert not surveys.duplicated(["account_id", "timestamp", "kind"]).any()
    nps = surveys[surveys["kind"] == "nps"]
    csat = surveys[surveys["kind"] == "csat"]
    assert 0.35 <= nps["score"].notna().mean() <= 0.6
    assert 0.25 <= csat["score"].notna().mean() <= 0.45
    answers = nps["score"].dropna()
    assert answers.between(0, 10).all() and (answers == answers.round()).all()
    assert 6.5 < answers.mean() < 9.0
    index = 100 * ((answers >= 9).mean() - (answers <= 6).mean())
    assert -20 < index < 60, index
    assert csat["score"].dropna().isin([1, 2, 3, 4, 5]).all()
    # New signups get their first NPS about a week in.
    acc = default_run[0].accounts
    new = acc[acc["signup_date"] >= START].set_index("account_id")["signup_date"]
    first = nps.groupby("account_id")["timestamp"].min()
    lag = (first.reindex(new.index) - new).dt.days.dropna()
    assert lag.between(7, 10).mean() > 0.9


def test_churners_were_less_active_than_retained_accounts(default_run):
    tables = default_run[0]
    end = tables.extract_date().date + pd.Timedelta(days=1)
    n_days = (end - START).days
    ids = tables.accounts["account_id"].to_numpy()
    index = pd.Index(ids)
    usage = tables.usage_events
    day = (usage["timestamp"].dt.normalize() - START).dt.days.to_numpy()
    active = np.zeros((len(ids), n_days + 1), dtype=np.int32)
    active[index.get_indexer(usage["account_id"]), day + 1] = 1
    cum = active.cumsum(axis=1)  # cum[a, d] = active days of account a before day d

    spells = _spells(tables.subscriptions)
    churns = spells[spells["end"].notna() & (spells["end"] >= START + pd.Timedelta(days=60))]
    churner, retained = [], []
    for row in churns.itertuples():
        c = (row.end - START).days
        a = index.get_loc(row.account_id)
        churner.append(cum[a, c] - cum[a, c - 30])
        # Comparable accounts: subscribed throughout the 30 days before and 30 days after.
        alive = spells[(spells["start"] <= row.end - pd.Timedelta(days=30))
                       & (spells["end"].isna() | (spells["end"] > row.end + pd.Timedelta(days=30)))]
        others = index.get_indexer(alive["account_id"])
        retained.append((cum[others, c] - cum[others, c - 30]).mean())
    assert len(churner) > 50
    assert np.mean(churner) < 0.7 * np.mean(retained), (np.mean(churner), np.mean(retained))


def test_default_size_volume(default_run):
    # Speed is measured in benchmarks, not asserted here.
    tables = default_run[0]
    assert 3_000_000 <= len(tables.usage_events) <= 12_000_000
    assert len(tables.accounts) == 3000
    assert tables.extract_date().date == pd.Timestamp("2025-12-31")


def test_tiny_run_is_valid():
    tables = generate(accounts=3, months=1, seed=1)
    assert len(tables.accounts) == 3 and len(tables.subscriptions) >= 1


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_tables_round_trips(small, tmp_path, fmt):
    out = write_tables(small, tmp_path / "data", fmt=fmt)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s.name}.{fmt}" for s in TABLES)
    loaded = load_tables(out)
    for spec in TABLES:
        pd.testing.assert_frame_equal(loaded.get(spec.name), small.get(spec.name))
    if fmt == "csv":
        lines = (out / "subscriptions.csv").read_text().splitlines()
        assert lines[0] == "account_id,start_date,end_date,mrr,billing_period_months"
        open_row = next(line for line in lines[1:] if line.split(",")[2] == "")
        assert len(open_row.split(",")[1]) == len("2024-01-01")
        stamp = (out / "usage_events.csv").read_text().splitlines()[1].split(",")[1]
        assert pd.Timestamp(stamp).isoformat() == stamp


def test_write_tables_refuses_non_empty_directory(small, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_tables(small, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    write_tables(small, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "accounts.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_write_tables_failure_leaves_nothing(small, tmp_path, monkeypatch):
    calls = []

    def fail_on_third(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        path.write_bytes(b"")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        write_tables(small, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_write_tables_rejects_unknown_format(small, tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_tables(small, tmp_path / "data", fmt="xlsx")
    assert list(tmp_path.iterdir()) == []
