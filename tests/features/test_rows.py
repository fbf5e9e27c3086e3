"""Rows of real billing exports: the extract date, paid-through ends censored, the default scoring
date, and labels that cannot be right refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.contract import Tables, validate_tables
from features.labels import LabelSettings, splits_in_time
from features.rows import LabelError, churn_rates, feature_rows, labelled_rows, scoring_rows
from features.sources import load_tables
from features.synthetic import generate
from tests.conftest import SHARED_DATA


def billing_export(accounts: int = 40) -> Tables:
    """Monthly renewals; a few accounts churn each month; every running subscription's end_date
    is its paid-through date, after the extract (the last usage event, 2024-09-20)."""
    ids = [f"A{i:02d}" for i in range(accounts)]
    subs, events = [], []
    for i, account in enumerate(ids):
        churn_month = 3 + i % 6 if i % 5 == 0 else None  # one in five churns, March to August
        months = pd.date_range("2024-01-01", "2024-09-01", freq="MS")
        for start in months:
            if churn_month is not None and start.month > churn_month:
                break
            subs.append((account, start, start + pd.DateOffset(months=1)))
        last = (pd.Timestamp(f"2024-{churn_month:02d}-28") if churn_month else
                pd.Timestamp("2024-09-20"))
        days = pd.date_range("2024-01-02", last, freq="7D").union([last])
        events += [(account, day, "login") for day in days]
    frame = pd.DataFrame(subs, columns=["account_id", "start_date", "end_date"])
    usage = pd.DataFrame(events, columns=["account_id", "timestamp", "event"])
    return validate_tables(Tables(pd.DataFrame({"account_id": ids}), frame, usage))


def test_running_subscriptions_paid_through_dates_are_not_churn():
    tables = billing_export()
    extract = tables.extract_date()
    assert (str(extract)) == "2024-09-20 (latest usage_events timestamp)"
    # The last monthly renewal runs to 2024-10-01, after the extract: the spell is still open.
    rows = labelled_rows(tables, LabelSettings(horizon_days=30), first="2024-03-01")
    rates = churn_rates(rows)
    assert rates.index.max() == pd.Timestamp("2024-08-01")  # + 30 days <= 2024-09-19
    assert rates.max() < 0.1
    scoring = scoring_rows(tables)
    assert set(scoring["as_of"]) == {pd.Timestamp("2024-09-21")}
    assert len(scoring) == 32  # the 8 churners are gone, everyone else is still a customer


def test_a_churn_spike_on_the_newest_date_is_refused_naming_the_cause():
    tables = billing_export()
    # Declaring churn known until after the paid-through ends counts them as churn.
    with pytest.raises(LabelError) as info:
        labelled_rows(tables, LabelSettings(horizon_days=30), observed_until="2024-10-31",
                      first="2024-03-01")
    message = str(info.value)
    assert "2024-09-01" in message and "paid-through" in message and "observed_until" in message
    rows = labelled_rows(tables, LabelSettings(horizon_days=30, check_churn_spike=False),
                         observed_until="2024-10-31", first="2024-03-01")
    assert churn_rates(rows).iloc[-1] > 0.5  # kept deliberately, the labels are what they are


def test_no_active_account_on_the_date_says_the_datas_range():
    tables = billing_export()
    with pytest.raises(ValueError) as info:
        scoring_rows(tables, ["2023-06-01"])
    message = str(info.value)
    assert "no account is active on 2023-06-01" in message and "2024-01-01" in message
    assert "2024-09-20 (latest usage_events timestamp)" in message


@pytest.mark.skipif(not (SHARED_DATA / "sim-dev").is_dir(), reason="../shared/data not found")
def test_the_raw_sim_dev_folder_labels_plausibly_and_says_what_it_ignored():
    tables = load_tables(SHARED_DATA / "sim-dev")
    assert any(w.startswith("events.csv.gz is not a table of the contract") and "usage_events" in w
               for w in tables.warnings)
    rows = labelled_rows(tables, LabelSettings(horizon_days=30, grace_days=0))
    assert churn_rates(rows).max() < 0.1  # the export's running subscriptions are not churn


def test_the_sim_dev_mapping_scores_every_running_account_by_default(sim_dev_tables):
    frame = feature_rows(sim_dev_tables)
    assert set(frame["as_of"]) == {pd.Timestamp("2020-08-01")}  # the day after the last event
    # Everyone whose last subscription runs past the known churn (2020-07-01) is scored.
    assert 5000 < len(frame) < 6451
    assert frame["events_30d"].notna().all() and frame["events_30d"].gt(0).mean() > 0.9


def test_check_reports_what_was_understood(tmp_path: Path):
    from features.check import check

    report = check(billing_export())
    text = "\n".join(report.lines())
    assert "extract date: 2024-09-20 (latest usage_events timestamp); churn known until 2024-09-19" \
        in text
    assert "no data for touchpoints, surveys" in text and "churn within 90 days" in text
    assert not report.problems


def test_short_data_starts_observing_early_enough_for_a_time_split():
    tables = billing_export()  # activity from 2024-01-02 to 2024-09-20
    label = LabelSettings(horizon_days=90)
    # 90 days of history first would leave April to June only: three dates, too few to split.
    dates = sorted(set(labelled_rows(tables, label)["as_of"]))
    assert len(dates) >= 4
    assert dates[0] == pd.Timestamp("2024-02-01")  # 30 days of history at least
    assert dates[-1] <= pd.Timestamp("2024-09-20") - pd.Timedelta(days=90)


def test_a_year_of_generated_data_labels_enough_dates_for_a_time_split():
    # 90 days of history first would leave seven monthly dates: with a 90-day horizon, no
    # training date ends its label before a validation date that ends its own before two tests.
    tables = generate(accounts=150, months=12, seed=5)
    dates = sorted(set(labelled_rows(tables, LabelSettings())["as_of"]))
    assert splits_in_time(dates, 90)
    assert not splits_in_time(dates[2:], 90)
