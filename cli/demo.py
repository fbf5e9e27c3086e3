"""``churn demo``: generate data, train and register a model, then serve it on localhost."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from cli.common import err, load, progress
from cli.serve import serve


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
    from features.rows import feature_rows
    from features.synthetic import generate as make
    from features.synthetic import write_tables
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
    example = curl_example(feature_rows(tables), port)
    err.print("\nScore accounts with:\n", highlight=False)
    print(example, flush=True)
    err.print(f"\nMLflow UI: mlflow ui --backend-store-uri {tracking}", highlight=False)
    if serve_api:
        err.print(f"API docs: http://127.0.0.1:{port}/docs\n", highlight=False)
        serve(host="127.0.0.1", port=port, model_uri=None, tracking_uri=tracking, workers=1)


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
