"""What a data folder holds, said out loud, and files that cannot be true refused: unknown files,
a table in two forms, cut-off or undecodable CSV, empty and corrupt files, impossible values."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from features.contract import DataContractError, today
from features.sources import load_tables
from tests.features.test_contract import GOOD, write


def test_files_the_contract_does_not_know_are_named_with_a_hint(tmp_path: Path) -> None:
    data = write(tmp_path)
    (data / "events.csv.gz").write_bytes(gzip.compress(b"account_id,event_date,event_type\n"))
    (data / "notes.txt").write_text("not data")
    (data / "README.md").write_text("# docs are not data")
    tables = load_tables(data)
    events = next(w for w in tables.warnings if w.startswith("events.csv.gz"))
    assert "not a table of the contract" in events and "usage_events" in events
    assert "mapping" in events
    assert any(w.startswith("notes.txt") for w in tables.warnings)
    assert not any("README" in w for w in tables.warnings)


def test_a_table_in_two_forms_says_which_was_read(tmp_path: Path) -> None:
    data = write(tmp_path)
    pd.read_csv(data / "surveys.csv").to_parquet(data / "surveys.parquet")
    tables = load_tables(data)
    assert "surveys: read surveys.parquet; surveys.csv also there, not read" in tables.warnings


@pytest.mark.parametrize(("name", "content", "words", "line"), [
    ("usage_events.csv", GOOD["usage_events.csv"] + "a,2024-03-05T10:00", "fields", 4),
    ("accounts.csv", "account_id,plan,seats\na,growth,10\nb,st\xe9rter,3\n".encode("latin-1"),
     "not UTF-8", None),
    ("touchpoints.csv", b"", "empty (0 bytes)", None),
    ("surveys.csv", 'account_id,timestamp,kind,score\na,"2024-03-01,nps,9\n', "not closed", 2),
])
def test_unreadable_csv_is_refused_naming_file_and_line(tmp_path: Path, name, content, words,
                                                         line) -> None:
    data = write(tmp_path)
    path = data / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(DataContractError) as info:
        load_tables(data)
    assert str(info.value).startswith(name) and words in str(info.value)
    if line is not None:
        assert f"(rows {line})" in str(info.value)


def test_a_cut_off_gzip_and_a_corrupt_parquet_are_refused(tmp_path: Path) -> None:
    data = write(tmp_path, **{"usage_events.csv": None})
    whole = gzip.compress(GOOD["usage_events.csv"].encode())
    (data / "usage_events.csv.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataContractError, match=r"^usage_events\.csv\.gz"):
        load_tables(data)
    (data / "usage_events.csv.gz").unlink()
    pd.read_csv(data / "accounts.csv").to_parquet(data / "accounts.parquet")
    raw = (data / "accounts.parquet").read_bytes()
    (data / "accounts.parquet").write_bytes(raw[:20] + b"\x00" * 40 + raw[60:])
    with pytest.raises(DataContractError, match=r"^accounts\.parquet: not a readable Parquet"):
        load_tables(data)


def test_an_empty_required_table_is_refused_and_an_empty_optional_one_is_absent(tmp_path) -> None:
    data = write(tmp_path, **{"surveys.csv": "account_id,timestamp,kind,score\n"})
    tables = load_tables(data)
    assert tables.surveys is None
    assert "surveys.csv has no rows: surveys is treated as absent" in tables.warnings
    write(tmp_path, **{"subscriptions.csv": "account_id,start_date,end_date\n"})
    with pytest.raises(DataContractError, match="subscriptions.csv: the required table "
                                                "subscriptions has no rows"):
        load_tables(data)


@pytest.mark.parametrize(("value", "words"), [("inf", "not a finite number"),
                                              ("1e12", "above 1e+07")])
def test_impossible_money_is_refused(tmp_path: Path, value: str, words: str) -> None:
    subs = GOOD["subscriptions.csv"].replace(",100\n", f",{value}\n")
    with pytest.raises(DataContractError) as info:
        load_tables(write(tmp_path, **{"subscriptions.csv": subs}))
    assert "subscriptions.csv, column 'mrr'" in str(info.value) and words in str(info.value)
    assert "(rows 2)" in str(info.value)


def test_rows_dated_in_the_future_are_refused_but_paid_through_ends_are_not(tmp_path) -> None:
    future = (today() + pd.Timedelta(days=30)).strftime("%Y-%m-%d")
    touchpoints = GOOD["touchpoints.csv"] + "".join(
        f"b,2099-06-0{i},call,company,\n" for i in range(1, 6))
    with pytest.raises(DataContractError) as info:
        load_tables(write(tmp_path, **{"touchpoints.csv": touchpoints}))
    message = str(info.value)
    assert message.startswith("touchpoints.csv, column 'timestamp': 2099-06-01 lies in the future")
    assert "(rows 4, 5, 6, 7, 8)" in message
    subs = GOOD["subscriptions.csv"].replace("2024-05-01", future)
    tables = load_tables(write(tmp_path, **{"touchpoints.csv": GOOD["touchpoints.csv"],
                                            "subscriptions.csv": subs}))
    assert tables.subscriptions.end_date.max() == pd.Timestamp(future)


def test_a_declared_extract_date_refuses_later_activity(tmp_path: Path) -> None:
    from features.sources import load_mapped

    write(tmp_path)
    mapping = tmp_path / "m.yaml"
    tables_section = "\n".join(
        f"  {name}:\n    from: {name}\n    columns: {{{', '.join(f'{c}: {c}' for c in cols)}}}"
        for name, cols in (("accounts", ["account_id"]),
                           ("subscriptions", ["account_id", "start_date", "end_date"]),
                           ("usage_events", ["account_id", "timestamp", "event"])))
    mapping.write_text(f"name: acme\ndata: .\nextract_date: '2024-03-01'\ntables:\n{tables_section}\n")
    with pytest.raises(DataContractError) as info:
        load_mapped(mapping)
    assert str(info.value).startswith("usage_events.csv, column 'timestamp': 2024-03-02 is after "
                                      "the extract date 2024-03-01 (rows 3)")
    mapping.write_text(mapping.read_text().replace("2024-03-01'", "2024-03-02'"))
    tables = load_mapped(mapping)
    assert tables.name == "acme"
    assert (str(tables.extract_date()), tables.observed_until()) == (
        "2024-03-02 (extract_date of the mapping)", pd.Timestamp("2024-03-01"))
    assert len(tables.usage_events) == 2
