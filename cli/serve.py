"""``churn serve`` and ``churn score``: the scoring API, and scores stored for a whole data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    DataOpt,
    EngineOpt,
    ModelNameOpt,
    ServingConfigOpt,
    SparkMasterOpt,
    TrackingOpt,
    err,
    fail,
    model_uri_for,
    parse_dates,
    progress,
    serving_settings,
    spark_for,
    warn,
)
from features.spark import DEFAULT_MASTER


def serve(
    host: Annotated[str | None, typer.Option(
        help="Bind address [default: $CHURN_HOST or 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: $CHURN_PORT or 8000]")] = None,
    model_uri: Annotated[str | None, typer.Option(
        help="Model to serve [default: the champion of --model-name]")] = None,
    model_name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes, each its own SO_REUSEPORT socket on the port "
             "[default: $CHURN_WORKERS or 1]")] = None,
    store_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the score store `churn score` writes (history, portfolio, "
             "worklist, console) [default: $CHURN_SCORE_STORE_URL or "
             "sqlite:///churn-scores.db]")] = None,
    config: ServingConfigOpt = None,
) -> None:
    """Serve churn scores over HTTP (FastAPI + uvicorn).

    Every other setting comes from CHURN_* variables or the --config file (docs/serving.md).
    """
    from serving.app import serve as run_server

    settings = serving_settings("churn serve", host=host, port=port, workers=workers,
                                model_uri=model_uri_for(model_uri, model_name),
                                tracking_uri=tracking_uri, score_store_url=store_url,
                                config_file=config)
    try:
        settings.check_exposure()
    except ValueError as exc:
        fail(f"churn serve: {exc}")
    try:
        run_server(settings)
    except (OSError, RuntimeError) as exc:  # port taken, a worker failed to start
        fail(f"churn serve: {exc}", 1)


def score(
    data: DataOpt,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Comma-separated scoring dates [default: the day after the data ends]")]
    = None,
    store_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the score store [default: $CHURN_SCORE_STORE_URL or "
             "sqlite:///churn-scores.db]")] = None,
    model_uri: Annotated[str | None, typer.Option(
        help="Model to score with [default: the champion of --model-name, else of the data "
             "set's own model]")] = None,
    model_name: ModelNameOpt = None,
    tracking_uri: TrackingOpt = None,
    config: ServingConfigOpt = None,
    engine: EngineOpt = "duckdb",
    spark_master: SparkMasterOpt = DEFAULT_MASTER,
    out: Annotated[Path | None, typer.Option(
        help="--engine spark: the new Parquet directory the scores are written to")] = None,
    store: Annotated[bool, typer.Option(
        help="--engine spark: also append the scores to the score store")] = False,
) -> None:
    """Score every active account and append the scores to the score store (never overwritten).

    With --engine spark the features are built and the model applied on Spark
    (mlflow.pyfunc.spark_udf), and the scores written as Parquet to --out (and stored with
    --store)."""
    from features.contract import DataContractError
    from features.redaction import redact
    from serving.batch import score_data
    from serving.model import ModelLoadError
    from serving.store import StoreError

    settings = serving_settings("churn score", model_uri=model_uri_for(model_uri, model_name, data),
                                tracking_uri=tracking_uri,
                                score_store_url=store_url, config_file=config)
    if engine == "spark":
        if out is None:
            fail("--engine spark writes the scores to a Parquet directory: give --out")
        _score_on_spark(data, settings, spark_for(engine, spark_master), out, store,
                        parse_dates(as_of) if as_of else None)
        return
    spark_for(engine, spark_master)  # an unknown engine is an error
    try:
        result = score_data(data, settings, parse_dates(as_of) if as_of else None,
                            progress=progress)
    except (ModelLoadError, DataContractError, StoreError, ValueError) as exc:
        # ValueError: no active account at a date, or data lacking most of the model's features
        fail(str(exc))
    for warning in result.warnings:
        warn(warning)
    err.print(f"stored {result.written:,} scores in {redact(settings.score_store_url)} "
              f"({result.kept:,} were already stored for this model version and were kept)",
              highlight=False)


def _score_on_spark(data, settings, spark, out: Path, store: bool, dates) -> None:
    from features.contract import DataContractError
    from features.redaction import redact
    from serving.model import ModelLoadError
    from serving.spark_batch import score_data_spark
    from serving.store import StoreError

    try:
        result = score_data_spark(data, settings, spark, out, dates, store=store,
                                  progress=progress)
    except (ModelLoadError, DataContractError, StoreError, ValueError, FileExistsError) as exc:
        fail(str(exc))
    for warning in result.warnings:
        warn(warning)
    stored = (f"; stored {sum(r.written for r in result.results.values()):,} in "
              f"{redact(settings.score_store_url)}" if store else "")
    err.print(f"wrote {result.rows:,} scores to {result.out}{stored}", highlight=False)
