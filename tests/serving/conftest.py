"""Fixtures for the serving tests: a tiny real LightGBM model, a temp MLflow registry and real
uvicorn servers started in subprocesses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.definitions import CATALOGUE, catalogue_records, categorical_features
from features.encoder import FeatureEncoder
from serving.model import LoadedModel
from serving.store import ScoreStore
from tests.servers import Server, start_server, uvicorn_factory_argv
from tests.stores import empty_mlflow_store

CATEGORY_VALUES = {
    "plan": ["starter", "growth", "enterprise"],
    "industry": ["software", "retail", "healthcare"],
    "segment": ["SMB", "MidMarket", "Enterprise"],
    "nps_bucket": ["detractor", "passive", "promoter"],
}


def random_feature_frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Random values for every catalogue feature (20 % missing) and a label tied to usage."""
    rng = np.random.default_rng(seed)
    frame = {}
    for spec in CATALOGUE:
        if spec.dtype == "category":
            values = rng.choice(CATEGORY_VALUES.get(spec.name, ["a", "b", "c"]),
                                size=n).astype(object)
        else:
            low, high = spec.bounds
            if high is not None:  # shares, flags, NPS: within their bounds
                values = rng.uniform(low, high, n)
                values = values.round() if spec.unit in ("flag", "points") else values
            else:
                values = rng.uniform(0 if low is None else max(low, 0), 30, n).round()
        mask = rng.uniform(size=n) < 0.2
        values = np.where(mask, None, values) if spec.dtype == "category" else np.where(
            mask, np.nan, values)
        frame[spec.name] = values
    df = pd.DataFrame(frame)
    active = df["active_days_30d"].fillna(15).to_numpy(dtype=float)
    logit = 1.5 - 0.2 * active + (df["plan"] == "starter").to_numpy() * 1.0
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return df, y


def train_tiny_booster(seed: int = 0) -> tuple[lgb.Booster, FeatureEncoder]:
    df, y = random_feature_frame(600, seed)
    names = [spec.name for spec in CATALOGUE]
    encoder = FeatureEncoder(names, categorical_features()).fit(df)
    data = lgb.Dataset(encoder.transform(df), label=y, feature_name=names,
                       categorical_feature=encoder.categorical_indices, free_raw_data=False)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed,
                         "num_leaves": 7, "min_data_in_leaf": 10}, data, num_boost_round=20)
    return booster, encoder


def write_model_dir(path: Path, booster: lgb.Booster, encoder: FeatureEncoder,
                    **metadata_overrides: object) -> Path:
    """A model directory as `churn train` logs it (artifacts/booster.txt + metadata.json)."""
    artifacts = path / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(artifacts / "booster.txt"))
    metadata = {"model_name": "churn-risk", "encoder": encoder.to_dict(),
                "catalogue": catalogue_records(), "horizon_days": 90,
                "trained_at": "2026-01-01T00:00:00+00:00",
                "metrics": {"roc_auc": 0.75, "pr_auc": 0.3}}
    metadata.update(metadata_overrides)
    (artifacts / "metadata.json").write_text(json.dumps(metadata))
    return path


#: A client address on this machine: keyless /v1/* answers only such clients, with a Host of
#: localhost (the allow-list against DNS rebinding).
LOCAL_CLIENT = ("127.0.0.1", 50000)


def local_client(app, **kwargs) -> TestClient:
    """A TestClient of ``app`` that calls from this machine as ``localhost``."""
    return TestClient(app, base_url="http://localhost", client=LOCAL_CLIENT, **kwargs)


def wait_for_model(client, timeout: float = 60.0, **kwargs) -> dict:
    """``/readyz`` of ``client`` (a TestClient or httpx client) once the model has loaded in the
    background (or its load failed: the reason is no longer that it is loading)."""
    from serving.lifecycle import LOADING

    deadline = time.monotonic() + timeout
    while True:
        body = client.get("/readyz", **kwargs).json()
        if body.get("reason") != LOADING or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


@pytest.fixture(scope="session")
def tiny_booster() -> tuple[lgb.Booster, FeatureEncoder]:
    return train_tiny_booster()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_booster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    booster, encoder = tiny_booster
    return write_model_dir(tmp_path_factory.mktemp("tiny-model"), booster, encoder)


@pytest.fixture(scope="session")
def tiny_model(tiny_booster) -> LoadedModel:
    """A LoadedModel built directly from a real booster (no MLflow)."""
    booster, encoder = tiny_booster
    return LoadedModel.build(booster, encoder,
                             {"model_name": "churn-risk", "horizon_days": 90,
                              "trained_at": "2026-01-01T00:00:00+00:00",
                              "metrics": {"roc_auc": 0.75}},
                             version="1", alias="champion", catalogue=catalogue_records())


PYFUNC_CODE = '''
import mlflow
from mlflow.pyfunc import PythonModel


class TinyModel(PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


mlflow.models.set_model(TinyModel())
'''


@dataclass
class LocalRegistry:
    tracking_uri: str
    model_name: str
    version: str
    run_id: str
    root: Path


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def register_model_dir(model_dir: Path, root: Path, name: str = "churn-risk",
                       alias: str | None = "champion") -> LocalRegistry:
    """Log ``model_dir``'s artifacts as a pyfunc in a SQLite store under ``root`` and register it."""
    import mlflow
    from mlflow import MlflowClient

    db = root / "mlflow.db"
    uri = f"sqlite:///{db}" if db.exists() else empty_mlflow_store(db)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("serving-tests")
    experiment_id = (experiment.experiment_id if experiment else client.create_experiment(
        "serving-tests", artifact_location=(root / "artifacts").as_uri()))
    code = root / "tiny_pyfunc.py"
    code.write_text(PYFUNC_CODE)
    with _tracking(uri), mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code),
            artifacts={"booster": str(model_dir / "artifacts" / "booster.txt"),
                       "metadata": str(model_dir / "artifacts" / "metadata.json")},
            registered_model_name=name, pip_requirements=["lightgbm"])
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return LocalRegistry(uri, name, version, run.info.run_id, root)


@pytest.fixture(scope="session")
def local_registry(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> LocalRegistry:
    """The tiny model registered as churn-risk@champion in a temp SQLite MLflow store."""
    return register_model_dir(tiny_model_dir, tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite MLflow store that exists but holds no registered model."""
    return empty_mlflow_store(tmp_path_factory.mktemp("empty-store") / "mlflow.db")


@pytest.fixture(scope="session")
def served_registry(registered_model):
    """The registry the API tests serve from: the model `training/` trained on the default data."""
    return registered_model


@pytest.fixture(scope="session")
def server_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Servers run here, so a stray default ``mlflow.db`` would never land in the repo."""
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def unready_server(empty_store: str, server_workdir: Path) -> Iterator[Server]:
    """A server whose model does not exist: churn-risk@champion in an empty store."""
    env = {"CHURN_TRACKING_URI": empty_store, "CHURN_MODEL_URI": "models:/churn-risk@champion"}
    with start_server(uvicorn_factory_argv, env, server_workdir) as server:
        yield server


MAX_BATCH = 5


@pytest.fixture(scope="session")
def model_server(served_registry, server_workdir: Path) -> Iterator[Server]:
    """A ready server on the served registry's churn-risk@champion, batches of at most 5."""
    store_url = f"sqlite:///{server_workdir / 'model-server-scores.db'}"
    ScoreStore(store_url).create()  # the API opens it read-only: `churn score` creates it
    env = {"CHURN_TRACKING_URI": served_registry.tracking_uri,
           "CHURN_MODEL_URI": f"models:/{served_registry.model_name}@champion",
           "CHURN_MAX_BATCH_SIZE": str(MAX_BATCH), "CHURN_SCORE_STORE_URL": store_url}
    with start_server(uvicorn_factory_argv, env, server_workdir, ready=True) as server:
        yield server


#: Features a data set's mapping adds beyond the built-in catalogue (as sim-dev's ``key_*``).
EXTRA_RECORDS = [
    {"name": "key_report_views_30d", "family": "key_events", "table": "usage_events",
     "window_days": 30, "aggregation": "count", "dtype": "float", "unit": "events",
     "description": "Report views in the last 30 days"},
    {"name": "channel", "family": "account", "table": "accounts", "window_days": None,
     "aggregation": "attribute", "dtype": "category", "unit": "",
     "description": "Acquisition channel"},
]


def train_mapped_booster(seed: int = 0) -> tuple[lgb.Booster, FeatureEncoder]:
    """A tiny booster on the catalogue plus EXTRA_RECORDS, the extra count driving the label."""
    df, _ = random_feature_frame(800, seed)
    rng = np.random.default_rng(seed)
    df["key_report_views_30d"] = rng.integers(0, 20, len(df)).astype(float)
    df["channel"] = rng.choice(["partner", "direct", "web"], len(df)).astype(object)
    logit = 2.0 - 0.4 * df["key_report_views_30d"].to_numpy() + (df["channel"] == "web") * 1.0
    y = (rng.uniform(size=len(df)) < 1 / (1 + np.exp(-logit))).astype(int)
    names = [spec.name for spec in CATALOGUE] + [r["name"] for r in EXTRA_RECORDS]
    encoder = FeatureEncoder(names, [*categorical_features(), "channel"]).fit(df)
    data = lgb.Dataset(encoder.transform(df), label=y, feature_name=names,
                       categorical_feature=encoder.categorical_indices, free_raw_data=False)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed,
                         "num_leaves": 7, "min_data_in_leaf": 10}, data, num_boost_round=20)
    return booster, encoder


@pytest.fixture(scope="session")
def mapped_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    booster, encoder = train_mapped_booster()
    return write_model_dir(tmp_path_factory.mktemp("mapped-model"), booster, encoder,
                           catalogue=catalogue_records() + EXTRA_RECORDS)
