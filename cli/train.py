"""``churn train``, ``churn evaluate`` and ``churn promote``: models in the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from cli.common import (
    DataOpt,
    EngineOpt,
    ModelNameOpt,
    SparkMasterOpt,
    TrackingOpt,
    err,
    fail,
    json_default,
    load,
    load_any,
    model_uri_for,
    progress,
    report,
    spark_for,
    warn,
)
from features.mlflow_defaults import DEFAULT_MODEL_NAME, champion_uri
from features.snapshot import Snapshot
from features.spark import DEFAULT_MASTER
from training.config import TrainConfig

if TYPE_CHECKING:
    from training.tracking import TrainResult


def train(
    data: DataOpt,
    horizon: Annotated[int | None, typer.Option(help="Churn horizon in days [default: the "
                                                "config's, else the data mapping's, else 90]")]
    = None,
    observed_until: Annotated[str | None, typer.Option(
        help="Last day churn is known [default: the mapping's observed_until, else the day "
        "before the extract date]")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML training config (see "
                                                "docs/training.md)")] = None,
    tune: Annotated[int, typer.Option(min=0, help="Optuna trials on the backtest before "
                                      "training (0 = use the config's hyperparameters)")] = 0,
    tracking_uri: TrackingOpt = None,
    model_name: ModelNameOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    engine: EngineOpt = "duckdb",
    spark_master: SparkMasterOpt = DEFAULT_MASTER,
) -> None:
    """Backtest, train and calibrate a model, log it to MLflow and register it as challenger;
    it becomes champion only if it beats the current champion (of the same data set) on the
    held-out window. What was understood of the data is printed first (as `churn check`)."""
    from training.train import run_training

    cfg = _config(config)
    if horizon is not None:
        cfg.label.horizon_days = horizon
    if model_name is not None:
        cfg.model_name = model_name
    spark = spark_for(engine, spark_master)
    tables = load_any(data, spark)
    if not report(tables) and isinstance(tables, Snapshot):
        fail("the problem above stops the training (nothing was trained)")
    try:
        result = run_training(tables, cfg, tracking=tracking_uri, observed_until=observed_until,
                              progress=progress, show_progress=not as_json, tune=tune,
                              spark=spark)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), default=json_default, indent=2))
        return
    if result.cross_validation:
        _print_cross_validated(result)
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
    for message in result.warnings:
        warn(message)


def _print_cross_validated(result: TrainResult) -> None:
    """The summary of a snapshot export's run: cross-validated, next to the logistic regression."""
    cv, p, m = result.cross_validation, result.promotion, result.metrics
    aliases = "challenger, champion" if p["promoted"] else "challenger"

    def spread(key: str) -> str:
        return f"{cv[key]['mean']:.3f} ± {cv[key]['std']:.3f}"

    folds = ", ".join(f"{r['model_roc_auc']:.3f}" for r in result.backtest)
    err.print(
        f"\n[bold]model {result.model_name} version {result.model_version}[/] (alias {aliases}), "
        f"run {result.run_id}\n"
        f"  stratified {len(result.backtest)}-fold cross-validation over {result.test_rows:,} "
        f"accounts (a snapshot: not point-in-time), churn rate {m['churn_rate']:.1%}\n"
        f"  LightGBM: ROC AUC {spread('model_roc_auc')} (folds {folds}), PR AUC "
        f"{spread('model_pr_auc')}\n"
        f"  logistic regression on the same columns: ROC AUC {spread('logreg_roc_auc')}, PR AUC "
        f"{spread('logreg_pr_auc')}\n"
        f"  final model fitted on all accounts; out-of-fold Brier {m['brier']:.4f}, ECE "
        f"{m['ece']:.4f}\n"
        f"  promotion: {p['decision']}: {p['reason']}\n"
        f"  tracking: {result.tracking_uri}", highlight=False)


def _config(path: Path | None) -> TrainConfig:
    if path is None:
        return TrainConfig()
    try:
        return TrainConfig.from_yaml(path)
    except FileNotFoundError:
        fail(f"config file not found: {path}")
    except ValidationError as exc:
        fail(f"invalid config {path}:\n{exc}")


def evaluate(
    data: DataOpt,
    model_uri: Annotated[str | None, typer.Option(
        help="Registered model to evaluate [default: the champion of --model-name]")] = None,
    model_name: ModelNameOpt = None,
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

    from training.evaluate import evaluate_registered

    model_uri = model_uri_for(model_uri, model_name, data) or champion_uri()
    tables = load(data)
    try:
        report = evaluate_registered(tables, model_uri, tracking=tracking_uri,
                                     horizon_days=horizon, observed_until=observed_until,
                                     progress=progress)
    except (ValueError, MlflowException, OSError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(report, default=json_default, indent=2))
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


def promote(
    version: Annotated[str, typer.Argument(help="Model version to make champion")],
    reason: Annotated[str, typer.Option(help="Why the gate is overridden (recorded in the "
                                        "version's tags)")],
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name")]
    = DEFAULT_MODEL_NAME,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Make a model version champion by hand, overriding the promotion gate."""
    from mlflow.exceptions import MlflowException

    from training.promotion import promote as promote_version
    from training.tracking import Registry

    try:
        decision = promote_version(Registry(tracking_uri), model_name, version, reason)
    except (ValueError, MlflowException) as exc:
        fail(str(exc))
    previous = decision.champion_version or "none"
    err.print(f"{model_name} version {version} is now champion (was {previous}): {decision.reason}",
              highlight=False)
