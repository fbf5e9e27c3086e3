"""Input validation: every violation names the file, the column and the first bad rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.contract import DataContractError
from features.sources import load_tables

GOOD = {
    "accounts.csv": "account_id,plan,seats\na,growth,10\nb,starter,3\n",
    "subscriptions.csv": "account_id,start_date,end_date,mrr\na,2024-01-01,,100\nb,2024-02-01,2024-05-01,30\n",
    "usage_events.csv": "account_id,timestamp,event,user_id,quantity\na,2024-03-01T10:00:00,report,u1,2\n"
                        "b,2024-03-02,export,,\n",
    "touchpoints.csv": "account_id,timestamp,channel,initiated_by,resolved_at\n"
                       "a,2024-03-01,call,company,\na,2024-03-02,ticket,customer,2024-03-03\n",
    "surveys.csv": "account_id,timestamp,kind,score\na,2024-03-01,nps,9\na,2024-03-02,csat,\n",
}


def write(tmp_path: Path, **changes: str | None) -> Path:
    for name, text in {**GOOD, **changes}.items():
        if text is not None:
            (tmp_path / name).write_text(text)
    return tmp_path


def test_good_data_loads_with_types(tmp_path: Path) -> None:
    tables = load_tables(write(tmp_path))
    assert tables.available == ["accounts", "subscriptions", "usage_events", "touchpoints", "surveys"]
    assert pd.api.types.is_datetime64_any_dtype(tables.usage_events.timestamp)
    assert tables.subscriptions.end_date.isna().tolist() == [True, False]
    assert tables.surveys.score.isna().tolist() == [False, True]  # unanswered survey
    # The latest activity (the resolved ticket) dates the extract; churn is known until the day
    # before, and the subscription ending after it is a paid-through date.
    extract = tables.extract_date()
    assert (extract.date, extract.source) == (pd.Timestamp("2024-03-03"), "latest touchpoints timestamp")
    assert tables.observed_until() == pd.Timestamp("2024-03-02")


def test_optional_tables_may_be_absent(tmp_path: Path) -> None:
    tables = load_tables(write(tmp_path, **{"touchpoints.csv": None, "surveys.csv": None}))
    assert tables.touchpoints is None and tables.surveys is None


def test_parquet_is_read_too(tmp_path: Path) -> None:
    write(tmp_path)
    pd.read_csv(tmp_path / "accounts.csv").to_parquet(tmp_path / "accounts.parquet")
    (tmp_path / "accounts.csv").unlink()
    assert list(load_tables(tmp_path).accounts.account_id) == ["a", "b"]


@pytest.mark.parametrize(("change", "expected"), [
    ({"subscriptions.csv": None}, r"required table missing: expected subscriptions\.parquet"),
    ({"accounts.csv": "id,plan\na,x\n"}, r"accounts\.csv: missing required column\(s\): account_id"),
    ({"usage_events.csv": "account_id,timestamp,event\na,2024-03-01,x\na,03/04/2024,y\n"},
     r"usage_events\.csv, column 'timestamp': unparseable datetime '03/04/2024'.*\(rows 3\)"),
    ({"surveys.csv": "account_id,timestamp,kind,score\na,2024-03-01,nps,9\na,2024-03-02,nps,11\n"},
     r"surveys\.csv, column 'score': nps score 11 out of range 0-10 \(rows 3\)"),
    ({"surveys.csv": "account_id,timestamp,kind,score\na,2024-03-01,csat,0\n"},
     r"csat score 0 out of range 1-5 \(rows 2\)"),
    ({"accounts.csv": "account_id\na\nb\na\n"},
     r"accounts\.csv, column 'account_id': duplicate key \(account_id\) \(rows 4\)"),
    ({"usage_events.csv": "account_id,timestamp,event,quantity\na,2024-03-01,x,-1\n"},
     r"usage_events\.csv, column 'quantity': value -1 below 0 \(rows 2\)"),
    ({"touchpoints.csv": "account_id,timestamp,channel,initiated_by\na,2024-03-01,call,us\n"},
     r"column 'initiated_by': unexpected value 'us'; expected one of company, customer"),
    ({"usage_events.csv": "account_id,timestamp,event\nzz,2024-03-01,x\n"},
     r"usage_events\.csv, column 'account_id': account_id 'zz' is not in accounts\.csv"),
    ({"subscriptions.csv": "account_id,start_date,end_date\na,2024-03-01,2024-02-01\n"},
     r"column 'end_date': end_date before start_date"),
    ({"usage_events.csv": "account_id,timestamp,event\na,2024-03-01,\n"},
     r"column 'event': empty values are not allowed \(rows 2\)"),
])
def test_contract_violations_are_named(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(DataContractError, match=expected):
        load_tables(write(tmp_path, **change))


def test_error_quotes_at_most_five_rows(tmp_path: Path) -> None:
    bad = "account_id,timestamp,event\n" + "".join(f"a,bad{i},x\n" for i in range(9))
    with pytest.raises(DataContractError) as info:
        load_tables(write(tmp_path, **{"usage_events.csv": bad}))
    assert "rows 2, 3, 4, 5, 6, ...)" in str(info.value)
    assert info.value.file == "usage_events.csv" and info.value.column == "timestamp"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="does not exist"):
        load_tables(tmp_path / "nope")
