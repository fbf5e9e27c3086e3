"""What every command shares: the error console, progress lines, common options, and turning a
package's errors into one clear line."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape

from features.contract import DataContractError, Tables
from features.snapshot import Snapshot
from features.sources import load_data, load_tables

if TYPE_CHECKING:
    from serving.settings import ServingSettings

err = Console(stderr=True, soft_wrap=True)

DataOpt = Annotated[Path, typer.Option("--data", help="Directory with one CSV/Parquet file per "
                                       "table (see docs/data-contract.md), a mapping file "
                                       "(docs/mappings.md) or a database URL")]
TrackingOpt = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI or "
    "sqlite:///mlflow.db]")]
ModelNameOpt = Annotated[str | None, typer.Option(
    "--model-name", help="Registered model name [default: the data set's name (a mapping's "
    "name), else churn-risk]")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="Where the features are built: duckdb (in process) or spark "
    "(docs/scale-out.md; needs the churn-risk\\[spark] extra)")]
SparkMasterOpt = Annotated[str, typer.Option(
    "--spark-master", help="Spark master URL for --engine spark (local[*], spark://host:7077, "
    "yarn ...)")]
ServingConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of serving settings [default: $CHURN_CONFIG_FILE]; CHURN_* "
    "variables override it, and options given here override both")]


def fail(message: str, code: int = 2) -> NoReturn:
    # The message is text, not markup: brackets in it (a file name, `churn-risk[spark]`) stay.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def spark_for(engine: str, master: str) -> Any:
    """The SparkSession ``--engine spark`` asks for (None for duckdb), or a clear error."""
    from features.spark import ENGINES, SparkUnavailable, spark_session

    if engine not in ENGINES:
        fail(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "duckdb":
        return None
    # PySpark repeats this on every pandas conversion; once is enough for a user to read it.
    warnings.filterwarnings("once", message="PySpark does not yet fully support pandas")
    try:
        return spark_session(master)
    except SparkUnavailable as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 -- Java missing, a master that does not answer
        fail(f"cannot start Spark on {master}: {str(exc).splitlines()[0]}")


def progress(message: str) -> None:
    err.print(f"[dim]-[/] {escape(message)}", highlight=False)


def load(data: Path | str, quiet: bool = False, spark: Any = None) -> Tables:
    """The tables at ``data`` (a folder's usage events read by ``spark`` when given), or a clear
    error naming the file, column and rows; what loading noticed is said on stderr (unless
    ``quiet``: the caller reports it)."""
    try:
        tables = load_tables(data, spark)
    except DataContractError as exc:
        fail(str(exc))
    if not quiet:
        for warning in tables.warnings:
            warn(warning)
    return tables


def load_any(data: Path | str, spark: Any = None) -> Tables | Snapshot:
    """:func:`load`, or the snapshot export a snapshot mapping declares (for the commands that
    take both: check and train); what loading noticed is left to :func:`report`."""
    try:
        return load_data(data, spark)
    except DataContractError as exc:
        fail(str(exc))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def report(tables: Tables | Snapshot) -> bool:
    """Print what was understood of ``tables`` (:func:`features.check.check`, or a snapshot's
    own summary); True if it holds no problem that stops training."""
    from features.check import check

    data = tables if isinstance(tables, Snapshot) else check(tables)
    lines = data.lines()
    if isinstance(tables, Snapshot):
        lines += [f"problem: {p}" for p in _snapshot_leaks(tables)]
    for line in lines:
        if line.startswith("warning: "):
            warn(line[len("warning: "):])
        elif line.startswith("problem: "):
            err.print(f"[bold red]problem:[/] {escape(line[len('problem: '):])}",
                      highlight=False)
        else:
            err.print(escape(line), highlight=False)
    return not any(line.startswith("problem: ") for line in lines)


def _snapshot_leaks(snapshot: Snapshot) -> list[str]:
    """The leakage guard on a snapshot's rows, as training will apply it (before any training:
    a snapshot's columns are all known at once)."""
    from training.leakage import LeakageError, check_leakage

    try:
        check_leakage(snapshot.frame[snapshot.feature_names], snapshot.frame["churned"].to_numpy())
    except LeakageError as exc:
        return [f"{exc}, or leave its column out under the mapping's snapshot.drop"]
    return []


def model_uri_for(model_uri: str | None, model_name: str | None,
                  data: Path | str | None = None) -> str | None:
    """The model to use: ``--model-uri``, else the champion of ``--model-name``, else (with
    ``data``) the champion of the data set's own model; None = the settings' default."""
    from features.mlflow_defaults import champion_uri
    from features.sources import dataset_name

    if model_uri is not None:
        return model_uri
    try:
        name = model_name or (dataset_name(data) if data is not None else None)
    except DataContractError as exc:
        fail(str(exc))
    return champion_uri(name) if name else None


def parse_dates(value: str) -> list[pd.Timestamp]:
    try:
        return [pd.Timestamp(v.strip()).normalize() for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"not a date list: {value!r} ({exc})") from exc


def json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def serving_settings(command: str, **given: Any) -> ServingSettings:
    """The serving settings with the options that were given (None = not given) on top.

    A default passed here would beat the CHURN_* variables and the config file, so only the
    options given are passed.
    """
    from serving.settings import ServingSettings

    try:
        return ServingSettings(**{k: v for k, v in given.items() if v is not None})
    except (ValueError, OSError) as exc:  # pydantic's ValidationError, or the config file
        fail(f"{command}: invalid settings:\n{exc}")
