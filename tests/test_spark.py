"""Apache Spark, proven equal to the in-process path: the feature builder on Ibis's PySpark
backend gives DuckDB's frame (every column, every snapshot) whether Spark reads the events itself
or is handed them; bad events read by Spark are refused as the pandas path refuses them;
`churn train --engine spark` trains what DuckDB trains; and `churn score --engine spark`
(`mlflow.pyfunc.spark_udf`, then the API's rules) writes and stores the in-process scores. One
local Spark session (2 cores) serves every test of this module."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from features.contract import Tables
from features.key_events import frequent_events
from features.pointintime import KEYS, build_features
from features.rows import active_rows, dates_for, grace_days_for
from features.sources import load_tables
from features.spark_events import SparkEvents
from features.synthetic import generate, write_tables
from serving.batch import score_frame, scoring_frame
from serving.settings import ServingSettings

pyspark = pytest.importorskip("pyspark")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java 17+ on the PATH"),
    # PySpark 4.x warns about pandas 3 (support, and its own use of a deprecated `copy=`); the
    # paths used here work, and the tests check their results.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]


@pytest.fixture(scope="module")
def spark():
    from features.spark import spark_session

    # Spark's Python workers run $PYSPARK_PYTHON: this interpreter, where mlflow, lightgbm live.
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    # Small data: one shuffle partition, and no code generation or adaptive re-planning, whose fixed
    # costs dominate on a few thousand rows.
    session = spark_session("local[2]", "churn-risk-tests", {
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "1",
        "spark.default.parallelism": "2", "spark.sql.adaptive.enabled": "false",
        "spark.sql.codegen.wholeStage": "false", "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1", "spark.driver.memory": "2g"})
    try:
        yield session
    finally:
        session.stop()
        if saved is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = saved


def _subset(tables: Tables, accounts: int) -> Tables:
    """The first ``accounts`` accounts (by id) of ``tables``, every table filtered to them."""
    keep = set(sorted(tables.accounts["account_id"].astype(str))[:accounts])
    frames = {name: frame[frame["account_id"].astype(str).isin(keep)].reset_index(drop=True)
              for name in ("accounts", "subscriptions", "usage_events", "touchpoints", "surveys")
              if (frame := tables.get(name)) is not None}
    return dataclasses.replace(tables, **frames)


def _assert_same_frame(spark_frame: pd.DataFrame, duck: pd.DataFrame) -> None:
    assert list(spark_frame.columns) == list(duck.columns)
    assert spark_frame[KEYS].equals(duck[KEYS])
    for column in duck.columns[2:]:
        a, b = spark_frame[column], duck[column]
        assert a.dtype == b.dtype, column
        if b.dtype == "float64":
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-9,
                                       equal_nan=True, err_msg=column)
        else:
            assert a.fillna("<NA>").equals(b.fillna("<NA>")), column


def _folder_with_partitioned_events(tables: Tables, root) -> object:
    """``tables`` as a data folder whose usage events are a Parquet directory partitioned by
    date (the layout docs/scale-out.md recommends)."""
    folder = write_tables(dataclasses.replace(tables, usage_events=None), root / "data")
    events = tables.usage_events.assign(event_date=tables.usage_events["timestamp"].dt.date
                                        .astype(str))
    events.to_parquet(folder / "usage_events.parquet", partition_cols=["event_date"], index=False)
    return folder


def test_spark_reads_the_events_itself_and_builds_duckdbs_frame(spark, small_tables,
                                                                 tmp_path) -> None:
    folder = _folder_with_partitioned_events(small_tables, tmp_path)
    on_spark, in_process = load_tables(folder, spark), load_tables(folder)
    # The events stay on Spark: the driver holds only their count, span and columns.
    assert isinstance(on_spark.usage_events, SparkEvents)
    assert len(on_spark.usage_events) == len(in_process.usage_events) > 10_000
    assert on_spark.extract_date() == in_process.extract_date()
    assert on_spark.activity_start() == in_process.activity_start()
    assert on_spark.absent_columns == in_process.absent_columns
    assert frequent_events(on_spark.usage_events) == frequent_events(in_process.usage_events)

    # Every monthly snapshot of every active account, every catalogue family present.
    obs = active_rows(in_process, dates_for(in_process, every="month"),
                      grace_days_for(in_process))[KEYS]
    duck = build_features(in_process, obs)
    assert obs["as_of"].nunique() >= 8
    # Real values in every family, so equal frames are not equal by being empty.
    for family, available in duck.attrs["families"].items():
        assert available, family
    numeric = duck.select_dtypes("float64")
    assert (numeric.notna().mean() > 0.5).sum() > 0.7 * numeric.shape[1]
    _assert_same_frame(build_features(on_spark, obs, spark=spark), duck)
    with pytest.raises(ValueError, match="held by Spark"):
        build_features(on_spark, obs.head(5))


BAD_EVENTS = [
    # (what is wrong, the column, text the error quotes)
    (lambda e: e.assign(timestamp=e["timestamp"].where(e.index != 7, "31/12/2024")),
     "timestamp", "'31/12/2024'"),
    (lambda e: e.assign(quantity=e["quantity"].where(e.index != 3, -2)), "quantity", "-2 below 0"),
    (lambda e: e.assign(quantity=e["quantity"].astype(object).where(e.index != 5, "lots")),
     "quantity", "'lots'"),
    (lambda e: e.assign(event=e["event"].where(e.index != 9, " ")), "event", "empty values"),
    (lambda e: e.assign(account_id=e["account_id"].where(e.index != 4, "nobody")), "account_id",
     "'nobody' is not in accounts.csv"),
    (lambda e: e.drop(columns=["event"]), None, "missing required column(s): event"),
]


def test_a_broken_events_file_read_by_spark_is_refused_naming_the_file(spark, small_tables,
                                                                        tmp_path) -> None:
    from features.contract import DataContractError

    folder = write_tables(_subset(small_tables, 20), tmp_path / "csv", fmt="csv")
    with (folder / "usage_events.csv").open("a") as fh:
        fh.write("a,b,c,d,e,f,g\n")  # a line that is not an event
    with pytest.raises(DataContractError) as caught:
        load_tables(folder, spark)
    assert caught.value.file == "usage_events.csv"

    folder = write_tables(_subset(small_tables, 20), tmp_path / "parquet")
    (folder / "usage_events.parquet").write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(DataContractError, match="Spark cannot read it") as caught:
        load_tables(folder, spark)
    assert caught.value.file == "usage_events.parquet"


@pytest.mark.parametrize(("spoil", "column", "quoted"), BAD_EVENTS)
def test_bad_events_read_by_spark_name_the_file_column_and_value(spark, small_tables, tmp_path,
                                                                 spoil, column, quoted) -> None:
    from features.contract import DataContractError

    tables = _subset(small_tables, 20)
    folder = write_tables(tables, tmp_path / "data", fmt="csv")
    events = pd.read_csv(folder / "usage_events.csv", dtype=str, keep_default_na=False)
    spoil(events).to_csv(folder / "usage_events.csv", index=False)
    with pytest.raises(DataContractError) as caught:
        load_tables(folder, spark)
    error = caught.value
    assert error.file == "usage_events.csv"
    assert error.column == column
    assert quoted in str(error)


def test_spark_features_equal_duckdb_on_sim_dev(spark, sim_dev_tables) -> None:
    # The shipped mapping's data (key events, extra account attributes), a sample of accounts.
    tables = _subset(sim_dev_tables, 150)
    dates = dates_for(tables, every="quarter")[1:4]
    obs = active_rows(tables, dates, grace_days_for(tables))[KEYS]
    assert len(obs) > 100
    duck = build_features(tables, obs)
    assert tables.feature_config.key_events
    _assert_same_frame(build_features(tables, obs, spark=spark), duck)


def test_spark_batch_scores_equal_in_process_scores(spark, registered_model, default_tables,
                                                    tmp_path) -> None:
    from serving.batch import score_data
    from serving.spark_batch import score_data_spark
    from serving.store import ScoreStore

    tables = _subset(default_tables, 250)
    tables.accounts["owner"] = [f"csm-{i % 4}" for i in range(len(tables.accounts))]
    folder = write_tables(tables, tmp_path / "data")

    def settings(store: str) -> ServingSettings:
        return ServingSettings(model_uri=f"models:/churn-risk/{registered_model.version}",
                               tracking_uri=registered_model.tracking_uri,
                               score_store_url=f"sqlite:///{tmp_path / store}", reasons_top=3)

    model, _, frame = scoring_frame(folder, settings("in-process.db"))
    expected = {s.account_id: s for s in score_frame(model, frame, settings("in-process.db"))}
    # mlflow.pyfunc.spark_udf gets rows with missing values, numeric and categorical alike.
    inputs = frame[[n for n in model.encoder.feature_names if n in frame.columns]]
    categorical = inputs.select_dtypes(exclude="number")
    assert categorical.shape[1] and categorical.isna().any().any()
    assert inputs.select_dtypes("number").isna().any().any()
    score_data(folder, settings("in-process.db"))

    # The folder's events are read by Spark, the features built and the model applied there.
    out = tmp_path / "scores"
    result = score_data_spark(folder, settings("spark.db"), spark, out, store=True)
    written = pd.read_parquet(out)
    assert result.rows == len(written) == len(expected) > 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left
    for row in written.to_dict("records"):
        row = {k: None if v is None or (isinstance(v, float) and math.isnan(v)) else v
               for k, v in row.items()}
        want = expected[row["account_id"]]
        assert row["churn_probability"] == pytest.approx(want.churn_probability, abs=1e-9)
        assert row["risk_band"] == want.risk_band
        assert row["health_band"] == want.health_band
        assert row["health_score"] == (None if want.health_score is None else
                                       pytest.approx(want.health_score, abs=1e-9))
        assert row["quadrant"] == want.quadrant
        assert json.loads(row["reasons"]) == json.loads(json.dumps(want.reasons))
    assert written["churn_probability"].nunique() > 50
    assert written["reasons"].map(lambda r: len(json.loads(r))).eq(3).all()

    # The store holds what the in-process `churn score` stores: the scores and their context
    # (mrr, renewal, owner, revenue at risk, recency), once; scoring again keeps them.
    assert sum(r.written for r in result.results.values()) == len(expected)
    ignore = {"scored_at", "churn_probability", "health_score", "revenue_at_risk", "components"}
    for account in list(expected)[:40]:
        (ours,), (theirs,) = (ScoreStore(settings(db).score_store_url).account(account,
                                                                                "churn-risk")
                              for db in ("spark.db", "in-process.db"))
        assert ours["owner"] == theirs["owner"] is not None
        assert ours["mrr"] == theirs["mrr"] is not None
        assert ours["revenue_at_risk"] == pytest.approx(theirs["revenue_at_risk"], abs=1e-6)
        assert ours["health_score"] == pytest.approx(theirs["health_score"], abs=1e-9)
        assert {k: v for k, v in ours.items() if k not in ignore} == \
               {k: v for k, v in theirs.items() if k not in ignore}
    with pytest.raises(FileExistsError):
        score_data_spark(folder, settings("spark.db"), spark, out, store=True)


def test_churn_train_on_spark_trains_what_duckdb_trains(spark, tmp_path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    folder = write_tables(generate(accounts=150, months=12, seed=7), tmp_path / "data")
    figures = {}
    for engine in ("duckdb", "spark"):
        # `churn train` as a user runs it; on Spark it uses the running session (local[2]).
        done = CliRunner().invoke(app, [
            "train", "--data", str(folder), "--engine", engine, "--spark-master", "local[2]",
            "--tracking-uri", f"sqlite:///{tmp_path / engine}.db", "--json"])
        assert done.exit_code == 0, done.output
        figures[engine] = json.loads(done.stdout)
    duck, on_spark = figures["duckdb"], figures["spark"]
    assert on_spark["model_version"] == "1" and on_spark["model_uri"].startswith("models:/")
    for key in ("train_rows", "test_rows", "train_dates", "test_dates", "validation_dates",
                "observed_until", "top_features", "best_iteration"):
        assert on_spark[key] == duck[key], key
    # Equal figures, not good ones: 150 accounts leave a handful of churners to test on.
    assert duck["test_rows"] > 100 and math.isfinite(duck["metrics"]["roc_auc"])
    for key in ("metrics", "baseline_metrics", "uncalibrated_metrics"):
        assert on_spark[key].keys() == duck[key].keys()
        for name, value in duck[key].items():
            assert on_spark[key][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, name)
