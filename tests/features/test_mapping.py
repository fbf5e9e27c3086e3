"""Bring-your-own-data mappings: the shipped ones on the shared data sets, and the conversions."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from features.contract import DataContractError
from features.definitions import feature_names
from features.labels import LabelSettings
from features.pointintime import build_features
from features.rows import labelled_rows
from features.sources import load_mapped, load_tables

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SIM_DEV = SHARED / "sim-dev"
RAVEN = SHARED / "ravenstack-saas"


def _need(path: Path) -> None:
    if not path.is_dir():
        pytest.skip(f"shared data set not found at {path}")


def test_sim_dev_mapping_keeps_every_event(sim_dev_tables) -> None:
    # The README's summary: 6451 accounts, 28793 subscriptions, 8,818,235 events.
    assert len(sim_dev_tables.accounts) == 6451
    assert len(sim_dev_tables.subscriptions) == 28793
    ev = sim_dev_tables.usage_events
    assert ev.quantity.sum() == 8_818_235  # identical rows collapsed, the counts kept
    assert len(ev) < 8_818_235 and not ev.duplicated(["account_id", "timestamp", "event"]).any()
    by_type = ev.groupby("event").quantity.sum()
    assert by_type["unfriend"] == 9587 and by_type["like"] == 2_979_487
    assert sim_dev_tables.churn.observed_until == pd.Timestamp("2020-07-01")
    assert sim_dev_tables.observed_until() == pd.Timestamp("2020-07-01")  # not the 07-31 of the events


def test_sim_dev_labels_match_the_readme(sim_dev_tables) -> None:
    obs = labelled_rows(sim_dev_tables, LabelSettings(horizon_days=30, grace_days=0),
                                first="2020-06-01")
    # README: "113 churners among 5,303 accounts at 2020-06-01".
    assert len(obs) == 5303 and obs.churned.sum() == 113


def test_sim_dev_key_event_features_count_each_type(sim_dev_tables) -> None:
    account = sim_dev_tables.accounts.account_id.iloc[0]
    as_of = pd.Timestamp("2020-03-01")
    frame = build_features(sim_dev_tables, pd.DataFrame({"account_id": [account], "as_of": [as_of]}))
    with gzip.open(SIM_DEV / "events.csv.gz", "rt") as fh:
        raw = pd.read_csv(fh, nrows=20_000)  # sorted by account: the first account is all here
    raw = raw[raw.account_id.astype(str) == account]
    raw["event_date"] = pd.to_datetime(raw.event_date)
    for event in ("like", "newfriend", "unfriend", "adview"):
        for days in (28, 56):
            expected = ((raw.event_type == event) & (raw.event_date < as_of)
                        & (raw.event_date >= as_of - pd.Timedelta(days=days))).sum()
            assert frame[f"key_{event}_{days}d"].iloc[0] == expected, (event, days)
    birth = pd.Timestamp(sim_dev_tables.accounts.date_of_birth.iloc[0])
    assert frame.age_years.iloc[0] == pytest.approx((as_of - birth).days / 365.25)
    assert frame.channel.iloc[0] == sim_dev_tables.accounts.channel.iloc[0]
    assert frame.key_features_used_30d.iloc[0] == sum(
        ((raw.event_type == e) & (raw.event_date < as_of)
         & (raw.event_date >= as_of - pd.Timedelta(days=30))).any()
        for e in sim_dev_tables.feature_config.key_events)
    assert list(frame.columns[2:]) == feature_names(sim_dev_tables.feature_config)


def test_ravenstack_mapping_converts_dates_lookups_and_churn_events() -> None:
    _need(RAVEN)
    tables = load_mapped("ravenstack-saas", RAVEN)
    acc = tables.accounts.set_index("account_id")
    # D/M/YYYY: "16/10/2024" is 16 October; "17/8/2023" is 17 August.
    assert acc.loc["A-2e4581", "signup_date"] == pd.Timestamp("2024-10-16")
    assert acc.loc["A-43a9e3", "signup_date"] == pd.Timestamp("2023-08-17")
    # usage rows name a subscription: their account comes from the subscriptions file
    raw_usage = pd.read_csv(RAVEN / "ravenstack_feature_usage.csv")
    raw_subs = pd.read_csv(RAVEN / "ravenstack_subscriptions.csv")
    first = raw_usage.iloc[0]
    owner = raw_subs.set_index("subscription_id").account_id[first.subscription_id]
    assert tables.usage_events.account_id.iloc[0] == owner
    assert tables.usage_events.quantity.iloc[0] == first.usage_count
    # tickets are reactive touchpoints with escalation; their CSAT becomes surveys
    tickets = pd.read_csv(RAVEN / "ravenstack_support_tickets.csv")
    assert (tables.touchpoints.initiated_by == "customer").all()
    assert tables.touchpoints.escalated.sum() == tickets.escalation_flag.sum()
    assert set(tables.surveys.kind) == {"csat"}
    assert tables.surveys.score.notna().sum() <= tickets.satisfaction_score.notna().sum()
    assert set(tables.subscriptions.billing_period_months.dropna()) == {1.0, 12.0}
    # churn events end the subscriptions started before them: every churned spell ends on one
    churns = pd.read_csv(RAVEN / "ravenstack_churn_events.csv")
    churn_dates = set(zip(churns.account_id,
                          pd.to_datetime(churns.churn_date, format="%d/%m/%Y"), strict=True))
    ended = tables.subscriptions.dropna(subset=["end_date"])
    assert len(ended) and all((a, e) in churn_dates
                              for a, e in zip(ended.account_id, ended.end_date, strict=True))
    frame = build_features(tables, pd.DataFrame({"account_id": ["A-2e4581"],
                                                 "as_of": ["2024-12-01"]}))
    assert frame.country.iloc[0] == "US" and frame.plan.iloc[0] == "Basic"


def test_churn_events_end_spells_and_reactivations_start_new_ones(tmp_path: Path) -> None:
    (tmp_path / "acc.csv").write_text("id,signup\nx,1/2/2024\n")
    (tmp_path / "subs.csv").write_text("id,start,end\nx,2024-02-01,\nx,2024-03-01,\nx,2024-06-10,\n")
    (tmp_path / "churn.csv").write_text("id,when\nx,15/5/2024\n")
    (tmp_path / "m.yaml").write_text(
        "tables:\n"
        "  accounts: {from: acc, columns: {account_id: id, signup_date: {from: signup, format: '%d/%m/%Y'}}}\n"
        "  subscriptions: {from: subs, columns: {account_id: id, start_date: start, end_date: end}}\n"
        "churn: {from: events, table: churn, account_id: id, date: {from: when, format: '%d/%m/%Y'},"
        " grace_days: 0, observed_until: '2024-07-01'}\n")
    tables = load_mapped(tmp_path / "m.yaml", tmp_path)
    assert tables.accounts.signup_date.iloc[0] == pd.Timestamp("2024-02-01")
    ends = tables.subscriptions.end_date.tolist()
    assert ends[:2] == [pd.Timestamp("2024-05-15")] * 2 and pd.isna(ends[2])
    obs = labelled_rows(tables, LabelSettings(horizon_days=30, grace_days=0), first="2024-05-01")
    # 05-01: churns 05-15 (within 30 days); 06-01: gone (the reactivation starts 06-10); 07-01 is
    # past observed_until minus the horizon.
    assert obs[["as_of", "churned"]].values.tolist() == [[pd.Timestamp("2024-05-01"), 1]]


def test_load_tables_accepts_a_mapping_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,tier\nx,gold\n")
    (tmp_path / "s.csv").write_text("id,begin\nx,2024-01-01\n")
    (tmp_path / "m.yaml").write_text(
        "data: .\n"
        "tables:\n"
        "  accounts: {from: a.csv, columns: {account_id: id, plan: tier}}\n"
        "  subscriptions: {from: s, columns: {account_id: id, start_date: begin, end_date: {value: null}}}\n")
    with pytest.raises(DataContractError, match="end_date: .*exactly one of 'from'"):
        load_tables(tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace(
        ", end_date: {value: null}", ""))
    tables = load_tables(tmp_path / "m.yaml")  # an unmapped nullable column is empty
    assert tables.accounts.plan.tolist() == ["gold"]
    assert tables.subscriptions.end_date.isna().all()


@pytest.mark.parametrize(("change", "message"), [
    ("signup: {from: signup, format: '%Y-%m-%d'}", r"acc.csv, column 'signup': date '1/2/2024' does "
     r"not match the format '%Y-%m-%d' \(rows 2\)"),
    ("signup: {from: nosuch}", r"acc.csv, column 'nosuch': column 'nosuch' \(for 'signup'\) not found"),
    ("signup: {from: signup, map: {a: b}}", r"acc.csv, column 'signup': value '1/2/2024' has no entry"),
])
def test_bad_mappings_name_file_column_and_rows(tmp_path: Path, change: str, message: str) -> None:
    (tmp_path / "acc.csv").write_text("id,signup\nx,1/2/2024\n")
    (tmp_path / "subs.csv").write_text("id,start\nx,2024-02-01\n")
    (tmp_path / "m.yaml").write_text(
        "tables:\n"
        f"  accounts: {{from: acc, columns: {{account_id: id, {change}}}}}\n"
        "  subscriptions: {from: subs, columns: {account_id: id, start_date: start}}\n")
    with pytest.raises(DataContractError, match=message):
        load_mapped(tmp_path / "m.yaml", tmp_path)


def test_unknown_tables_and_keys_in_a_mapping_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("tables:\n  accounts: {from: a, columns: {account_id: id}}\n"
                                     "  events: {from: e, columns: {x: y}}\n")
    with pytest.raises(DataContractError, match="unknown table.*events"):
        load_mapped(tmp_path / "m.yaml", tmp_path)
    (tmp_path / "m.yaml").write_text("tables: {}\nfeaturez: {}\n")
    with pytest.raises(DataContractError, match="featurez"):
        load_mapped(tmp_path / "m.yaml", tmp_path)


def test_mixed_date_formats_without_a_mapping_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text("account_id,signup_date\na,2024-01-05\nb,16/10/2024\n")
    (tmp_path / "subscriptions.csv").write_text("account_id,start_date\na,2024-01-05\n")
    with pytest.raises(DataContractError, match=r"accounts.csv, column 'signup_date': unparseable "
                       r"date '16/10/2024'.*\(rows 3\)"):
        load_tables(tmp_path)


def test_a_key_event_missing_from_the_data_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "acc.csv").write_text("id\nx\n")
    (tmp_path / "subs.csv").write_text("id,start\nx,2024-02-01\n")
    (tmp_path / "ev.csv").write_text("id,day,what\nx,2024-02-02,login\n")
    (tmp_path / "m.yaml").write_text(
        "tables:\n"
        "  accounts: {from: acc, columns: {account_id: id}}\n"
        "  subscriptions: {from: subs, columns: {account_id: id, start_date: start}}\n"
        "  usage_events: {from: ev, columns: {account_id: id, timestamp: day, event: what}}\n"
        "features: {key_events: [login, lgoin]}\n")
    with pytest.raises(DataContractError, match=r"ev.csv, column 'event': key event\(s\) lgoin never "
                       r"occur \(events seen: login\)"):
        load_mapped(tmp_path / "m.yaml", tmp_path)
