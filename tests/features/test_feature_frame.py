"""The feature-frame API and the `churn features` command: scoring rows, training rows, --every."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features.definitions import feature_names
from features.labels import LabelSettings
from features.pointintime import build_features
from features.rows import feature_rows, labelled_rows
from features.synthetic import generate, write_tables

runner = CliRunner()


@pytest.fixture(scope="module")
def tables():
    return generate(accounts=40, months=8, seed=3)


def test_training_rows_equal_labels_plus_the_same_features(tables) -> None:
    frame = feature_rows(tables, every="month", horizon_days=60)
    obs = labelled_rows(tables, LabelSettings(horizon_days=60),
                                first=tables.activity_start())
    # Same rows and labels as the label module, same values as building the features directly.
    assert frame[["account_id", "as_of", "churned"]].values.tolist() == \
        obs[["account_id", "as_of", "churned"]].values.tolist()
    direct = build_features(tables, obs[["account_id", "as_of"]])
    pd.testing.assert_frame_equal(frame.drop(columns="churned"), direct)
    # The last date's 60-day horizon must end on or before the data's end.
    assert frame.as_of.max() + pd.Timedelta(days=60) <= tables.extract_date().date


def test_scoring_rows_are_every_active_account_the_day_after_the_data(tables) -> None:
    frame = feature_rows(tables)
    assert set(frame.as_of) == {tables.extract_date().date + pd.Timedelta(days=1)}
    subs = tables.subscriptions
    active = set(subs.loc[subs.end_date.isna(), "account_id"])
    assert set(frame.account_id) == active and "churned" not in frame


def test_features_command_with_every_month_and_labels(tables, tmp_path: Path) -> None:
    data = write_tables(tables, tmp_path / "data")
    out = tmp_path / "train.parquet"
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out),
                                 "--every", "month", "--horizon", "60"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["account_id", "as_of", *feature_names(), "churned"]
    assert (frame.as_of.dt.day == 1).all() and frame.as_of.nunique() >= 4
    bad = runner.invoke(app, ["features", "--data", str(data), "--out", str(tmp_path / "x.parquet"),
                              "--every", "fortnight"])
    assert bad.exit_code == 2 and "every must be one of" in bad.output
    assert not (tmp_path / "x.parquet").exists()


def test_features_command_reads_a_mapping_file(tmp_path: Path) -> None:
    (tmp_path / "acc.csv").write_text("id,tier,region\nx,gold,eu\ny,silver,us\n")
    (tmp_path / "subs.csv").write_text("id,start\nx,2024-01-01\ny,2024-02-01\n")
    (tmp_path / "ev.csv").write_text("id,day,what\nx,2024-02-01,login\nx,2024-02-01,login\n"
                                     "y,2024-02-20,export\n")
    (tmp_path / "m.yaml").write_text(
        "data: .\n"
        "tables:\n"
        "  accounts: {from: acc, columns: {account_id: id, plan: tier, region: region}}\n"
        "  subscriptions: {from: subs, columns: {account_id: id, start_date: start}}\n"
        "  usage_events: {from: ev, columns: {account_id: id, timestamp: day, event: what},"
        " collapse_duplicates: true}\n"
        "features: {key_events: [login], attributes: [{column: region}]}\n")
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "--data", str(tmp_path / "m.yaml"), "--out", str(out),
                                 "--as-of", "2024-03-01"])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out).set_index("account_id")
    assert frame.loc["x", "key_login_30d"] == 2 and frame.loc["y", "key_login_30d"] == 0
    assert frame.loc["y", "events_30d"] == 1 and frame.loc["x", "region"] == "eu"
