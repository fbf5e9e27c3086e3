"""``churn serve`` and ``churn score``: the scoring API, and scores stored for a whole data set."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import (
    DataOpt,
    ModelNameOpt,
    ServingConfigOpt,
    TrackingOpt,
    err,
    fail,
    model_uri_for,
    parse_dates,
    progress,
    serving_settings,
    warn,
)


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
) -> None:
    """Score every active account and append the scores to the score store (never overwritten)."""
    from features.contract import DataContractError
    from features.redaction import redact
    from serving.batch import score_data
    from serving.model import ModelLoadError
    from serving.store import StoreError

    settings = serving_settings("churn score", model_uri=model_uri_for(model_uri, model_name, data),
                                tracking_uri=tracking_uri,
                                score_store_url=store_url, config_file=config)
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
