"""The only MLflow writer: tracking runs, logging the model, registering and aliasing versions."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

import features
from features.calibration import calibrate
from features.modelframe import FeatureEncoder

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
CHAMPION = "champion"
CHALLENGER = "challenger"


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
        elif pd.api.types.is_numeric_dtype(ex[col]):
            # Doubles, not integers: any feature may be missing, and an integer column in the
            # signature would make `mlflow models serve` reject a missing value.
            ex[col] = ex[col].astype("float64")
    return ex


def _signature(example: pd.DataFrame, example_proba: Any) -> ModelSignature:
    """Every feature optional (a missing feature is a missing value); categorical features are
    strings; numeric features accept any number type. MLflow refuses int64 for a ``double``
    column ("cannot safely convert"), and JSON callers of ``mlflow models serve`` send whole
    numbers such as ``12`` as integers; the pyfunc coerces the values itself."""
    cols = []
    for name in example.columns:
        if pd.api.types.is_numeric_dtype(example[name]):
            cols.append(ColSpec(AnyType(), name, required=False))
        else:
            cols.append(ColSpec(DataType.string, name, required=False))
    return ModelSignature(inputs=Schema(cols), outputs=infer_signature(example, example_proba).outputs)


def log_and_register(*, booster_path: Path, metadata: dict[str, Any], example: pd.DataFrame,
                     example_proba: Any, model_name: str, set_champion: bool = False,
                     extra_artifacts: dict[str, Path] | None = None) -> LoggedModel:
    """Log the pyfunc (inside the active run), register a new version and alias it challenger
    (``training.promotion`` decides whether it also becomes champion).

    ``example`` is a few rows of feature values and ``example_proba`` the model's output for them;
    together they define the model signature and input example. ``extra_artifacts`` are added to
    the model directory (e.g. the reference distributions for drift checks).
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_and_register must be called inside an MLflow run")
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "metadata.json"
        meta_path.write_text(json.dumps(metadata, indent=2, default=str))
        example = _example_frame(example)
        signature = _signature(example, example_proba)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_FILE),
            artifacts={"booster": str(booster_path), "metadata": str(meta_path),
                       **{k: str(v) for k, v in (extra_artifacts or {}).items()}},
            code_paths=[str(Path(features.__file__).parent)],
            signature=signature,
            input_example=example,
            registered_model_name=model_name,
            pip_requirements=["lightgbm", "pandas", "numpy", "mlflow"],
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if set_champion:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    return LoggedModel(run.info.run_id, model_name, version, f"models:/{model_name}/{version}")


def load_scorer(model_uri: str) -> tuple[Callable[[pd.DataFrame], np.ndarray], dict[str, Any]]:
    """A registered model as ``(score(frame) -> calibrated probabilities, metadata)``.

    Reads ``booster.txt`` and ``metadata.json`` from the model directory, as serving does, so a
    model whose feature list differs from today's still scores (absent features are missing values)
    instead of failing the signature check.
    """
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    artifacts = local / "artifacts"
    metadata = json.loads((artifacts / "metadata.json").read_text())
    encoder = FeatureEncoder.from_dict(metadata["encoder"])
    booster = lgb.Booster(model_file=str(artifacts / "booster.txt"))

    def score(frame: pd.DataFrame) -> np.ndarray:
        return calibrate(booster.predict(encoder.transform(frame)), metadata.get("calibration"))

    return score, metadata
