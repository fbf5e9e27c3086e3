"""The only MLflow writer: tracking runs, logging the model, registering and aliasing versions."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

import features

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
CHAMPION = "champion"


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI: explicit, else ``MLFLOW_TRACKING_URI``, else a SQLite file in the cwd."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def ensure_experiment(name: str, uri: str) -> str:
    """Get or create the experiment. With a SQLite store, artifacts go beside the database file
    (not into whatever the current directory is)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):]).resolve()
        location = (db.parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


@dataclass
class LoggedModel:
    run_id: str
    model_name: str
    version: str
    model_uri: str


def _example_frame(X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803
    """Input example with plain object/float columns, so the signature names real types."""
    ex = X.head(5).copy()
    for col in ex.columns:
        if pd.api.types.is_string_dtype(ex[col]):
            ex[col] = ex[col].astype(object).where(ex[col].notna(), None)
    return ex


def log_and_register(*, booster_path: Path, metadata: dict[str, Any], example: pd.DataFrame,
                     example_proba: Any, model_name: str, set_champion: bool = True
                     ) -> LoggedModel:
    """Log the pyfunc (inside the active run), register a new version and alias it champion.

    ``example`` is a few rows of feature values and ``example_proba`` the model's output for them;
    together they define the model signature and input example.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_and_register must be called inside an MLflow run")
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "metadata.json"
        meta_path.write_text(json.dumps(metadata, indent=2, default=str))
        example = _example_frame(example)
        signature = infer_signature(example, example_proba)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={"booster": str(booster_path), "metadata": str(meta_path)},
            code_paths=[str(Path(features.__file__).parent)],
            signature=signature,
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=["lightgbm", "pandas", "numpy", "mlflow"],
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    if set_champion:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    return LoggedModel(run.info.run_id, model_name, version, f"models:/{model_name}/{version}")
