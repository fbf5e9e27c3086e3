"""`churn check`: what was understood of a data set, before any training; `churn train` says the
same first."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from features.synthetic import write_tables
from tests.features.test_rows import billing_export

runner = CliRunner()


def test_check_names_files_dates_families_churn_and_warnings(tmp_path: Path) -> None:
    data = write_tables(billing_export(), tmp_path / "data", fmt="csv")
    (data / "tickets.csv").write_text("id,opened\n1,2024-01-01\n")
    result = runner.invoke(app, ["check", "--data", str(data)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "its models registered as churn-risk" in out
    assert "usage_events: usage_events.csv, " in out and "2024-01-02 .. 2024-09-20" in out
    assert "extract date: 2024-09-20 (latest usage_events timestamp)" in out
    assert "no data for touchpoints, surveys" in out
    assert "churn within 90 days (grace 30) per observation date: 2024-02-01" in out
    assert "warning: tickets.csv is not a table of the contract" in out and "touchpoints" in out


def test_check_exits_1_when_the_labels_cannot_be_right(tmp_path: Path) -> None:
    write_tables(billing_export(), tmp_path / "data", fmt="csv")
    mapping = tmp_path / "billing.yaml"
    tables = {"accounts": ["account_id"], "subscriptions": ["account_id", "start_date", "end_date"],
              "usage_events": ["account_id", "timestamp", "event"]}
    mapping.write_text(
        "name: billing\ndata: data\nchurn: {observed_until: '2024-10-31', horizon_days: 30}\n"
        "tables:\n" + "".join(f"  {t}:\n    from: {t}\n    columns: {{"
                             f"{', '.join(f'{c}: {c}' for c in cols)}}}\n"
                             for t, cols in tables.items()))
    result = runner.invoke(app, ["check", "--data", str(mapping)])
    assert result.exit_code == 1
    assert "problem: the churn rate on the newest labelled date" in result.output
    assert "its models registered as billing" in result.output
