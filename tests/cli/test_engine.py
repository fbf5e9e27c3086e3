"""`--engine`: an unknown engine and a missing PySpark are one clear line each (the Spark extra
is optional at install); nothing is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from features.spark import SparkUnavailable, require_pyspark
from features.synthetic import generate, write_tables

runner = CliRunner()


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return write_tables(generate(accounts=20, months=6, seed=5), tmp_path / "data")


def test_without_pyspark_the_spark_engine_names_the_extra(monkeypatch, data: Path,
                                                          tmp_path: Path) -> None:
    # The import fails for real: None in sys.modules makes `import pyspark` raise ImportError.
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(SparkUnavailable, match=r'pip install "churn-risk\[spark\]"'):
        require_pyspark()
    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out),
                                 "--engine", "spark"])
    assert result.exit_code == 2
    assert "churn-risk[spark]" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_an_unknown_engine_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out),
                                 "--engine", "polars"])
    assert result.exit_code == 2 and "--engine must be one of duckdb, spark" in result.output
    assert not out.exists()


def test_spark_scoring_needs_an_output_directory(data: Path) -> None:
    result = runner.invoke(app, ["score", "--data", str(data), "--engine", "spark"])
    assert result.exit_code == 2 and "give --out" in result.output
