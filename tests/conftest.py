"""Shared fixtures: seeded synthetic data and a model trained and registered in a temp MLflow store."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from features.contract import Tables
from features.synthetic import generate, write_tables
from tests.stores import empty_mlflow_store

#: The shared data sets (``../shared/data`` beside the project).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

@contextmanager
def shared_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """A directory every xdist worker of this run shares, and whether it is still to be made.

    The suite runs on several processes (``-n auto``); a costly session resource (a trained
    model, written data) is made by the first worker that asks, under an exclusive lock, and read
    by the others once it is complete (``done`` marks it).
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = path / ".done"
        path.mkdir(exist_ok=True)
        yield path, not done.exists()
        done.touch()


@pytest.fixture(scope="session")
def small_tables() -> Tables:
    """A small seeded customer base for fast tests."""
    return generate(accounts=120, months=10, seed=3)


def _made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> Tables:
    """``make()``'s tables, made by the first xdist worker that asks and unpickled by the others
    (generating or loading them costs seconds; unpickling them, well under one)."""
    with shared_once(tmp_path_factory, name) as (root, todo):
        if todo:
            with open(root / "tables.pickle", "wb") as out:
                pickle.dump(make(), out, protocol=pickle.HIGHEST_PROTOCOL)
    with open(root / "tables.pickle", "rb") as saved:
        return pickle.load(saved)


@pytest.fixture(scope="session")
def default_tables(tmp_path_factory: pytest.TempPathFactory) -> Tables:
    """The generator's default data (what `churn demo` uses)."""
    return _made_once(tmp_path_factory, "default-tables", generate)


@pytest.fixture(scope="session")
def sim_dev_tables(tmp_path_factory: pytest.TempPathFactory) -> Tables:
    """The shared sim-dev data set (8.8 M events) through its shipped mapping, loaded once for all
    workers. Tests must not modify it."""
    path = SHARED_DATA / "sim-dev"
    if not path.is_dir():
        pytest.skip(f"shared data set not found at {path}")
    from features.mapping import MAPPINGS_DIR
    from features.sources import load_mapped

    return _made_once(tmp_path_factory, "sim-dev-tables",
                      lambda: load_mapped(MAPPINGS_DIR / "sim-dev.yaml", path))


@pytest.fixture(scope="session")
def default_data_dir(tmp_path_factory: pytest.TempPathFactory, default_tables: Tables) -> Path:
    """The generator's default data written as files, once for all workers."""
    with shared_once(tmp_path_factory, "default-data") as (root, todo):
        if todo:
            write_tables(default_tables, root / "default")
    return root / "default"


@dataclass
class RegisteredModel:
    tracking_uri: str
    model_name: str
    version: str
    data_dir: Path
    result: object


@pytest.fixture(scope="session")
def registered_model(default_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> RegisteredModel:
    """A model trained on the default data, registered as churn-risk@champion in a SQLite store;
    trained once for all workers (tests only read the store)."""
    from training.tracking import TrainResult
    from training.train import run_training

    with shared_once(tmp_path_factory, "registered-model") as (root, todo):
        record = root / "result.json"
        uri = f"sqlite:///{root / 'mlflow.db'}"
        if todo:
            result = run_training(default_data_dir, tracking=empty_mlflow_store(root / "mlflow.db"))
            record.write_text(json.dumps(result.to_dict()))
        result = TrainResult(**json.loads(record.read_text()))
    return RegisteredModel(uri, result.model_name, result.model_version, default_data_dir, result)


#: The shipped snapshot mappings (one row per account with a churned flag) and their data sets.
SNAPSHOT_MAPPINGS = ("ibm-telco-churn", "orange-telecom-churn", "bank-churn-records")
#: Quick settings for the snapshot runs of the tests: bigger steps, fewer rounds, 3 folds.
SNAPSHOT_QUICK = {"lightgbm": {"learning_rate": 0.1, "num_boost_round": 300,
                               "early_stopping_rounds": 20}}


@dataclass
class SnapshotModels:
    tracking_uri: str
    results: dict[str, object]  # mapping name -> TrainResult


@pytest.fixture(scope="session")
def snapshot_models(tmp_path_factory: pytest.TempPathFactory) -> SnapshotModels:
    """Each shipped snapshot mapping trained end to end (3-fold cross-validation, quick LightGBM
    settings) and registered under its data set's name in one SQLite store; once for all
    workers (tests only read the store)."""
    import dataclasses

    from features.mapping import MAPPINGS_DIR
    from features.sources import load_data
    from training.config import TrainConfig
    from training.tracking import TrainResult
    from training.train import run_training

    for name in SNAPSHOT_MAPPINGS:
        if not (SHARED_DATA / name).is_dir():
            pytest.skip(f"shared data set not found at {SHARED_DATA / name}")
    with shared_once(tmp_path_factory, "snapshot-models") as (root, todo):
        record = root / "results.json"
        uri = f"sqlite:///{root / 'mlflow.db'}"
        if todo:
            empty_mlflow_store(root / "mlflow.db")
            config = TrainConfig.model_validate(SNAPSHOT_QUICK)
            done = {}
            for name in SNAPSHOT_MAPPINGS:
                snapshot = dataclasses.replace(load_data(MAPPINGS_DIR / f"{name}.yaml"), folds=3)
                done[name] = run_training(snapshot, config, tracking=uri).to_dict()
            record.write_text(json.dumps(done))
        results = {k: TrainResult(**v) for k, v in json.loads(record.read_text()).items()}
    return SnapshotModels(uri, results)
