"""Shared fixtures: seeded synthetic data and a model trained and registered in a temp MLflow store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from features.contract import Tables
from features.synthetic import generate, write_tables


@pytest.fixture(scope="session")
def small_tables() -> Tables:
    """A small seeded customer base for fast tests."""
    return generate(accounts=120, months=10, seed=3)


@pytest.fixture(scope="session")
def default_tables() -> Tables:
    """The generator's default data (what `churn demo` uses)."""
    return generate()


@pytest.fixture(scope="session")
def default_data_dir(default_tables: Tables, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "default"
    write_tables(default_tables, out)
    return out


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
    """A model trained on the default data, registered as churn-risk@champion in a SQLite store."""
    from training.pipeline import run_training

    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    result = run_training(default_data_dir, tracking=uri)
    return RegisteredModel(uri, result.model_name, result.model_version, default_data_dir, result)
