"""The ``churn`` command line: generate data, build features, train, serve, and the demo."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import pandas as pd
import typer
from pydantic import ValidationError
from rich.console import Console

from features.contract import DataContractError, load_tables
from training.config import TrainConfig

if TYPE_CHECKING:
    from serving.settings import ServingSettings

app = typer.Typer(help="churn-risk: churn prediction and health scores for customer success.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
err = Console(stderr=True, soft_wrap=True)

DataOpt = Annotated[Path, typer.Option("--data", help="Directory with one CSV/Parquet file per "
                                       "table (see docs/data-contract.md)")]
TrackingOpt = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI or "
    "sqlite:///mlflow.db]")]


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _progress(message: str) -> None:
    err.print(f"[dim]-[/] {message}", highlight=False)


@app.command()
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
        _fail(f"--format must be parquet or csv, not {fmt!r}")
    tables = make(accounts=accounts, months=months, seed=seed, start=start)
    try:
        write_tables(tables, out, fmt=fmt, overwrite=overwrite)
    except FileExistsError as exc:
        _fail(str(exc))
    counts = ", ".join(f"{n} {len(tables.get(n)):,}" for n in tables.available)
    err.print(f"wrote {out}: {counts}", highlight=False)


def _parse_dates(value: str) -> list[pd.Timestamp]:
    try:
        return [pd.Timestamp(v.strip()).normalize() for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"not a date list: {value!r} ({exc})") from exc


@app.command()
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
) -> None:
    """Build point-in-time features for every account active at the given dates.

    --data may be a data directory or a mapping file (see docs/features.md).
    """
    from features.builder import feature_frame
    from features.io import write_parquet

    tables = _load(data)
    try:
        frame = feature_frame(tables, _parse_dates(as_of) if as_of and every is None else None,
                              every, horizon_days=horizon)
    except ValueError as exc:
        _fail(str(exc))
    write_parquet(frame, out)
    n_features = frame.shape[1] - 2 - ("churned" in frame.columns)
    label = ", labelled" if "churned" in frame.columns else ""
    err.print(f"wrote {len(frame):,} rows x {n_features} features{label} to {out}",
              highlight=False)


def _load(data: Path):
    try:
        return load_tables(data)
    except DataContractError as exc:
        _fail(str(exc))


@app.command()
def train(
    data: DataOpt,
    horizon: Annotated[int | None, typer.Option(help="Churn horizon in days [default: the "
                                                "config's, else the data mapping's, else 90]")]
    = None,
    observed_until: Annotated[str | None, typer.Option(
        help="Last date the data is complete for [default: latest date in the data]")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML training config (see "
                                                "docs/training.md)")] = None,
    tune: Annotated[int, typer.Option(min=0, help="Optuna trials on the backtest before "
                                      "training (0 = use the config's hyperparameters)")] = 0,
    tracking_uri: TrackingOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Backtest, train and calibrate a model, log it to MLflow and register it as challenger;
    it becomes champion only if it beats the current champion on the held-out window."""
    from training.pipeline import run_training

    cfg = _config(config)
    if horizon is not None:
        cfg.label.horizon_days = horizon
    tables = _load(data)
    try:
        result = run_training(tables, cfg, tracking=tracking_uri, observed_until=observed_until,
                              progress=_progress, show_progress=not as_json, tune=tune)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), default=_json_default, indent=2))
        return
    m, b, h = result.metrics, result.baseline_metrics, result.health_baseline_metrics
    p = result.promotion
    aliases = "challenger, champion" if p["promoted"] else "challenger"
    backtest = ""
    if result.backtest:
        aucs = [r["model_roc_auc"] for r in result.backtest]
        backtest = (f"  rolling-origin backtest ({len(aucs)} dates): ROC AUC "
                    f"{', '.join(f'{a:.3f}' for a in aucs)}\n")
    lift_b = result.lift_over_baselines.get("logreg", {})
    lift_h = result.lift_over_baselines.get("health_rules", {})
    err.print(
        f"\n[bold]model {result.model_name} version {result.model_version}[/] (alias {aliases}), "
        f"run {result.run_id}\n"
        f"  held-out dates {', '.join(result.test_dates)}: {result.test_rows:,} rows, "
        f"churn rate {m['churn_rate']:.1%}\n"
        f"  ROC AUC {m['roc_auc']:.3f}  PR AUC {m['pr_auc']:.3f}  top-decile lift "
        f"{m['top_decile_lift']:.2f}  Brier {m['brier']:.4f}  ECE "
        f"{result.uncalibrated_metrics['ece']:.4f} -> {m['ece']:.4f} (calibrated)\n"
        f"{backtest}"
        f"  logistic-regression baseline: ROC AUC {b['roc_auc']:.3f}  PR AUC {b['pr_auc']:.3f} "
        f"(model {lift_b.get('roc_auc', float('nan')):+.3f} ROC AUC)\n"
        f"  rule-only health score: ROC AUC {h['roc_auc']:.3f}  PR AUC {h['pr_auc']:.3f} "
        f"(model {lift_h.get('roc_auc', float('nan')):+.3f} ROC AUC)\n"
        f"  promotion: {p['decision']}: {p['reason']}\n"
        f"  tracking: {result.tracking_uri}", highlight=False)


def _config(path: Path | None) -> TrainConfig:
    if path is None:
        return TrainConfig()
    try:
        return TrainConfig.from_yaml(path)
    except FileNotFoundError:
        _fail(f"config file not found: {path}")
    except ValidationError as exc:
        _fail(f"invalid config {path}:\n{exc}")


ServingConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of serving settings [default: $CHURN_CONFIG_FILE]; CHURN_* "
    "variables override it, and options given here override both")]


def _serving_settings(command: str, **given: Any) -> ServingSettings:
    """The serving settings with the options that were given (None = not given) on top.

    A default passed here would beat the CHURN_* variables and the config file, so only the
    options given are passed.
    """
    from serving.settings import ServingSettings

    try:
        return ServingSettings(**{k: v for k, v in given.items() if v is not None})
    except (ValueError, OSError) as exc:  # pydantic's ValidationError, or the config file
        _fail(f"{command}: invalid settings:\n{exc}")


@app.command()
def evaluate(
    data: DataOpt,
    model_uri: Annotated[str, typer.Option(help="Registered model to evaluate")]
    = "models:/churn-risk@champion",
    horizon: Annotated[int | None, typer.Option(help="Churn horizon in days [default: the "
                                                "model's]")] = None,
    observed_until: Annotated[str | None, typer.Option(
        help="Last date the data is complete for [default: latest date in the data]")] = None,
    tracking_uri: TrackingOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
) -> None:
    """Score every observation date of a data set with a registered model and print the metrics
    (no retraining, nothing written to MLflow)."""
    from mlflow.exceptions import MlflowException

    from training.pipeline import evaluate_registered

    tables = _load(data)
    try:
        report = evaluate_registered(tables, model_uri, tracking=tracking_uri,
                                     horizon_days=horizon, observed_until=observed_until,
                                     progress=_progress)
    except (ValueError, MlflowException, OSError) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(report, default=_json_default, indent=2))
        return
    m = report["metrics"]
    err.print(f"\n[bold]{model_uri}[/] on {data} ({report['horizon_days']}-day horizon): "
              f"{m['rows']:,.0f} rows, churn rate {m['churn_rate']:.1%}\n"
              f"  ROC AUC {m['roc_auc']:.3f}  PR AUC {m['pr_auc']:.3f}  top-decile lift "
              f"{m['top_decile_lift']:.2f}  Brier {m['brier']:.4f}  ECE {m['ece']:.4f}",
              highlight=False)
    for date, dm in report["per_date"].items():
        err.print(f"  {date}: ROC AUC {dm['roc_auc']:.3f}  churn rate {dm['churn_rate']:.1%}  "
                  f"({dm['rows']:,.0f} rows)", highlight=False)
    if report["dates_seen_in_training"]:
        err.print(f"  [yellow]note:[/] the model trained or calibrated on "
                  f"{', '.join(report['dates_seen_in_training'])}", highlight=False)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Model version to make champion")],
    reason: Annotated[str, typer.Option(help="Why the gate is overridden (recorded in the "
                                        "version's tags)")],
    model_name: Annotated[str, typer.Option(help="Registered model name")] = "churn-risk",
    tracking_uri: TrackingOpt = None,
) -> None:
    """Make a model version champion by hand, overriding the promotion gate."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.promotion import promote as promote_version
    from training.registry import tracking_uri as resolve_uri

    client = MlflowClient(resolve_uri(tracking_uri))
    try:
        decision = promote_version(client, model_name, version, reason)
    except (ValueError, MlflowException) as exc:
        _fail(str(exc))
    previous = decision.champion_version or "none"
    err.print(f"{model_name} version {version} is now champion (was {previous}): {decision.reason}",
              highlight=False)


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(
        help="Bind address [default: $CHURN_HOST or 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: $CHURN_PORT or 8000]")] = None,
    model_uri: Annotated[str | None, typer.Option(
        help="Model to serve [default: models:/churn-risk@champion]")] = None,
    tracking_uri: TrackingOpt = None,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes, each its own SO_REUSEPORT socket on the port "
             "[default: $CHURN_WORKERS or 1]")] = None,
    config: ServingConfigOpt = None,
) -> None:
    """Serve churn scores over HTTP (FastAPI + uvicorn).

    Every other setting comes from CHURN_* variables or the --config file (docs/serving.md).
    """
    from serving.app import serve as run_server

    settings = _serving_settings("churn serve", host=host, port=port, workers=workers,
                                 model_uri=model_uri, tracking_uri=tracking_uri,
                                 config_file=config)
    try:
        settings.check_exposure()
    except ValueError as exc:
        _fail(f"churn serve: {exc}")
    try:
        run_server(settings)
    except (OSError, RuntimeError) as exc:  # port taken, a worker failed to start
        _fail(f"churn serve: {exc}", 1)


@app.command()
def score(
    data: DataOpt,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Comma-separated scoring dates [default: the day after the data ends]")]
    = None,
    store_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the score store [default: $CHURN_SCORE_STORE_URL or "
             "sqlite:///churn-scores.db]")] = None,
    model_uri: Annotated[str | None, typer.Option(
        help="Model to score with [default: models:/churn-risk@champion]")] = None,
    tracking_uri: TrackingOpt = None,
    config: ServingConfigOpt = None,
) -> None:
    """Score every active account and append the scores to the score store (never overwritten)."""
    from serving.batch import score_to_store
    from serving.loader import ModelLoadError, load_model, redact
    from serving.store import ScoreStore, StoreError
    from training.pipeline import scoring_frame

    settings = _serving_settings("churn score", model_uri=model_uri, tracking_uri=tracking_uri,
                                 score_store_url=store_url, config_file=config)
    try:
        model = load_model(settings.model_uri, settings.tracking_uri, settings.treeshap)
    except ModelLoadError as exc:
        _fail(str(exc))
    tables = _load(data)
    dates = _parse_dates(as_of) if as_of else [None]
    frames = [scoring_frame(tables, d) for d in dates]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    _progress(f"scoring {len(frame):,} account-dates with {model.name} version "
              f"{model.version or '-'}")
    try:
        store = ScoreStore(settings.score_store_url)
        results = score_to_store(model, frame, store, settings, progress=_progress)
    except StoreError as exc:
        _fail(str(exc))
    written = sum(r.written for r in results.values())
    kept = sum(r.kept for r in results.values())
    err.print(f"stored {written:,} scores in {redact(settings.score_store_url)} ({kept:,} were "
              "already stored for this model version and were kept)", highlight=False)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps data and the MLflow store")]
    = Path("churn-demo"),
    port: Annotated[int, typer.Option(help="Port for the API")] = 8000,
    accounts: Annotated[int, typer.Option(help="Synthetic accounts")] = 3000,
    months: Annotated[int, typer.Option(help="Months of synthetic history")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the API at the end")]
    = True,
) -> None:
    """Generate data, train and register a model, then serve it on localhost."""
    from features.synthetic import generate as make
    from features.synthetic import write_tables
    from training.pipeline import run_training, scoring_frame

    data_dir = workdir / "data"
    tracking = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    if data_dir.exists() and any(data_dir.iterdir()):
        _progress(f"using existing data in {data_dir}")
    else:
        _progress(f"generating {accounts} accounts x {months} months into {data_dir}")
        write_tables(make(accounts=accounts, months=months, seed=seed), data_dir)
    tables = _load(data_dir)
    result = run_training(tables, TrainConfig(), tracking=tracking, progress=_progress)
    m = result.metrics
    err.print(f"\n[bold green]trained[/] {result.model_name} v{result.model_version}: held-out "
              f"ROC AUC {m['roc_auc']:.3f} (baseline {result.baseline_metrics['roc_auc']:.3f}), "
              f"top-decile lift {m['top_decile_lift']:.1f}", highlight=False)
    example = _curl_example(scoring_frame(tables), port)
    err.print("\nScore accounts with:\n", highlight=False)
    print(example, flush=True)
    err.print(f"\nMLflow UI: mlflow ui --backend-store-uri {tracking}", highlight=False)
    if serve_api:
        err.print(f"API docs: http://127.0.0.1:{port}/docs\n", highlight=False)
        serve(host="127.0.0.1", port=port, model_uri=None, tracking_uri=tracking, workers=1)


def _curl_example(frame: pd.DataFrame, port: int) -> str:
    """A ready-to-paste curl command scoring two real accounts."""
    rows = []
    for _, row in frame.head(2).iterrows():
        feats = {k: (None if pd.isna(v) else (round(v, 4) if isinstance(v, float) else v))
                 for k, v in row.drop(["account_id", "as_of"]).items()}
        rows.append({"account_id": row["account_id"],
                     "features": {k: v for k, v in feats.items() if v is not None}})
    body = json.dumps({"accounts": rows})
    return (f"curl -s -X POST http://127.0.0.1:{port}/v1/scores "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")


if __name__ == "__main__":  # `python -m training.cli`, used by the tests
    app()
