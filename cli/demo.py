"""``churn demo``: generate data, train and register a model, score every account, then serve
the API and the CS console on localhost, announcing them (the console's address and a
ready-to-paste curl) once they answer."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import pandas as pd
import typer

from cli.common import err, fail, load, progress, serving_settings

#: Months of score history the demo stores before today's scores.
HISTORY_MONTHS = 2
#: How long the announcement waits for the server to answer /readyz.
READY_TIMEOUT_S = 300.0


def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps data, the MLflow store and "
                                          "the score store")] = Path("churn-demo"),
    port: Annotated[int, typer.Option(help="Port for the API")] = 8000,
    accounts: Annotated[int, typer.Option(help="Synthetic accounts")] = 3000,
    months: Annotated[int, typer.Option(help="Months of synthetic history")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Start the API at the end")]
    = True,
) -> None:
    """Generate data, train and register a model, score every account, then serve it on
    localhost (portfolio and account history answer at once)."""
    from features.rows import default_scoring_date, feature_rows
    from features.synthetic import generate as make
    from features.synthetic import write_tables
    from serving.batch import score_data
    from serving.store import StoreError
    from training.train import run_training

    data_dir = workdir / "data"
    tracking = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    if data_dir.exists() and any(data_dir.iterdir()):
        progress(f"using existing data in {data_dir}")
    else:
        progress(f"generating {accounts} accounts x {months} months into {data_dir}")
        write_tables(make(accounts=accounts, months=months, seed=seed), data_dir)
    tables = load(data_dir)
    result = run_training(tables, tracking=tracking, progress=progress)
    m = result.metrics
    err.print(f"\n[bold green]trained[/] {result.model_name} v{result.model_version}: held-out "
              f"ROC AUC {m['roc_auc']:.3f} (baseline {result.baseline_metrics['roc_auc']:.3f}), "
              f"top-decile lift {m['top_decile_lift']:.1f}", highlight=False)
    settings = serving_settings(
        "churn demo", host="127.0.0.1", port=port, workers=1, tracking_uri=tracking,
        model_uri=f"models:/{result.model_name}/{result.model_version}",
        score_store_url=f"sqlite:///{(workdir / 'churn-scores.db').resolve()}")
    # Today and a month and two months before: the console's charts and changes in risk have a
    # history to show.
    today = default_scoring_date(tables)
    dates = [today - pd.DateOffset(months=k) for k in range(HISTORY_MONTHS, -1, -1)]
    try:
        scored = score_data(tables, settings, dates=dates, progress=progress)
    except StoreError as exc:
        fail(str(exc))
    err.print(f"[bold green]scored[/] {scored.written:,} account-dates ({len(dates)} monthly "
              "dates) into the score store", highlight=False)
    example = curl_example(feature_rows(tables), port)
    if not serve_api:
        print(example, flush=True)
        return
    from serving.app import serve

    threading.Thread(target=announce_when_ready, args=(port, example, tracking),
                     daemon=True).start()
    try:
        serve(settings)
    except (OSError, RuntimeError, ValueError) as exc:
        fail(f"churn demo: {exc}", 1)


def announce_when_ready(port: int, example: str, tracking: str) -> None:
    """Print how to use the service once it answers (never before: the curl would fail)."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        err.print(f"[yellow]the API did not get ready within {READY_TIMEOUT_S:.0f} s[/]")
        return
    err.print("\nThe API is ready. Score accounts with:\n", highlight=False)
    print(example, flush=True)
    print(f"\nCS console (portfolio, worklist, accounts): {base}/ui", flush=True)
    err.print(f"\nPortfolio: curl -s {base}/v1/portfolio\nAPI docs: {base}/docs\n"
              f"MLflow UI: {venv_command('mlflow')} ui --backend-store-uri {tracking}\n",
              highlight=False)


def venv_command(name: str) -> str:
    """A command of this installation, as the user can type it (``.venv/bin/mlflow``)."""
    path = Path(sys.executable).parent / name
    try:
        return shlex.quote(os.path.relpath(path))
    except ValueError:  # another drive
        return shlex.quote(str(path))


def curl_example(frame: pd.DataFrame, port: int) -> str:
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
