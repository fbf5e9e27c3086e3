"""``churn generate`` and ``churn features``: synthetic data, and point-in-time feature rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    DataOpt,
    EngineOpt,
    SparkMasterOpt,
    err,
    fail,
    load,
    load_any,
    parse_dates,
    report,
    spark_for,
)
from features.spark import DEFAULT_MASTER


def generate(
    out: Annotated[Path, typer.Option(help="Output directory")],
    accounts: Annotated[int, typer.Option(min=10, help="Number of accounts")] = 3000,
    months: Annotated[int, typer.Option(min=6, help="Months of history")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    start: Annotated[str, typer.Option(help="First day of the data")] = "2024-01-01",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output directory")] = False,
) -> None:
    """Generate a seeded synthetic customer base (the five tables)."""
    from features.synthetic import generate as make
    from features.synthetic import write_tables

    if fmt not in ("parquet", "csv"):
        fail(f"--format must be parquet or csv, not {fmt!r}")
    tables = make(accounts=accounts, months=months, seed=seed, start=start)
    try:
        write_tables(tables, out, fmt=fmt, overwrite=overwrite)
    except FileExistsError as exc:
        fail(str(exc))
    counts = ", ".join(f"{n} {len(tables.get(n)):,}" for n in tables.available)
    err.print(f"wrote {out}: {counts}", highlight=False)


def features(
    data: DataOpt,
    out: Annotated[Path, typer.Option(help="Output Parquet file")],
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Comma-separated observation dates (default: the day after the data)")]
    = None,
    every: Annotated[str | None, typer.Option(
        help="'month', 'week' or 'quarter': every such date over the data (overrides --as-of)")]
    = None,
    horizon: Annotated[int | None, typer.Option(
        help="Also label each row: churned within this many days (training rows; dates whose "
        "horizon is not observed yet are left out)")] = None,
    engine: EngineOpt = "duckdb",
    spark_master: SparkMasterOpt = DEFAULT_MASTER,
) -> None:
    """Build point-in-time features for every account active at the given dates."""
    from features.io import write_parquet
    from features.rows import feature_rows

    spark = spark_for(engine, spark_master)
    tables = load(data, spark=spark)
    try:
        frame = feature_rows(tables, parse_dates(as_of) if as_of and every is None else None,
                             every, horizon_days=horizon, spark=spark)
    except ValueError as exc:
        fail(str(exc))
    write_parquet(frame, out)
    n_features = frame.shape[1] - 2 - ("churned" in frame.columns)
    label = ", labelled" if "churned" in frame.columns else ""
    err.print(f"wrote {len(frame):,} rows x {n_features} features{label} to {out}",
              highlight=False)


def check(data: DataOpt) -> None:
    """Say what was understood of a data set before any training: files read and ignored, rows
    and dates per table, the extract date, feature families, churn rate per observation date,
    warnings (for a snapshot export: its label, features, columns left out and how it is
    validated). Exits 1 when something would stop training."""
    if not report(load_any(data)):
        raise typer.Exit(1)
