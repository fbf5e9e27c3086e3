"""Shared fixtures: seeded synthetic data and a model trained and registered in a temp MLflow store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from features.contract import Tables
from features.synthetic import generate, write_tables
from tests.stores import empty_mlflow_store

#: The shared data sets (``../shared/data`` beside the project).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Session fixtures too costly to build twice, and the xdist group of the tests that use them.
#: The suite runs on several processes (``-n auto --dist loadgroup`` in pyproject.toml) and each
#: process builds its own session fixtures, so every test that needs one of these runs in the
#: same process.
COSTLY_FIXTURES = {"registered_model": "default-model", "default_tables": "default-model",
                   "sim_dev_tables": "sim-dev"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for xdist, longest first.

    Tests behind a costly session fixture share its group; the others are grouped by module, so a
    module's servers start once. The costly groups and the modules with end-to-end tests are
    queued first (``--no-loadscope-reorder`` keeps this order), so that no long test starts last
    and runs alone.
    """
    e2e = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("e2e")}
    rank: dict[str, int] = {}
    for item in items:
        names = getattr(item, "fixturenames", ())  # the closure: fixtures of fixtures count too
        module = item.nodeid.split("::")[0]
        costly = next((g for f, g in COSTLY_FIXTURES.items() if f in names), None)
        rank[item.nodeid] = 0 if costly else 1 if module in e2e else 2
        item.add_marker(pytest.mark.xdist_group(costly or module))
    items.sort(key=lambda item: rank[item.nodeid])  # stable: collection order within a rank


@pytest.fixture(scope="session")
def small_tables() -> Tables:
    """A small seeded customer base for fast tests."""
    return generate(accounts=120, months=10, seed=3)


@pytest.fixture(scope="session")
def default_tables() -> Tables:
    """The generator's default data (what `churn demo` uses)."""
    return generate()


@pytest.fixture(scope="session")
def sim_dev_tables() -> Tables:
    """The shared sim-dev data set (8.8 M events) through its shipped mapping. Loaded once per
    session: a features test and the training quality floor both read it, and a load takes about
    15 s. Tests must not modify it."""
    path = SHARED_DATA / "sim-dev"
    if not path.is_dir():
        pytest.skip(f"shared data set not found at {path}")
    from features.mapping import MAPPINGS_DIR
    from features.sources import load_mapped

    return load_mapped(MAPPINGS_DIR / "sim-dev.yaml", path)


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
    from training.train import run_training

    uri = empty_mlflow_store(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    result = run_training(default_data_dir, tracking=uri)
    return RegisteredModel(uri, result.model_name, result.model_version, default_data_dir, result)
