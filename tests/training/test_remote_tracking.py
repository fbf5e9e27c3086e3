"""Remote tracking: a real `mlflow server` on 127.0.0.1 whose backend store is the local PostgreSQL
(its own schema, dropped afterwards) and whose artifacts it serves; we train against it over HTTP
and load the champion back from it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from features.rows import feature_rows
from tests.servers import clean_env, free_port, stop
from training.config import TrainConfig
from training.train import run_training

PG_URL = os.environ.get("CHURN_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PG_URL, reason="CHURN_TEST_POSTGRES_URL is not set (.ci/run sets it to "
                       "the local PostgreSQL); the remote-tracking test needs a PostgreSQL"),
]


@pytest.fixture
def pg_schema():
    """A fresh schema for the MLflow tables, dropped afterwards so reruns start clean."""
    import psycopg2

    schema = f"mlflow_test_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@pytest.fixture
def mlflow_server(pg_schema: str, tmp_path: Path):
    # libpq's `options` puts the schema first on the search path: MLflow creates its tables there.
    sep = "&" if "?" in PG_URL else "?"
    backend = f"{PG_URL}{sep}options=-csearch_path%3D{pg_schema}"
    artifacts = tmp_path / "artifacts"
    port = free_port()
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
            "--artifacts-destination", artifacts.as_uri(), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    log = tmp_path / "mlflow-server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, env=clean_env({"PATH": path}), cwd=tmp_path, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not come up:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield url, artifacts, pg_schema
    finally:
        stop(proc)


def test_train_against_a_remote_server_and_load_the_champion(mlflow_server, small_tables,
                                                              monkeypatch) -> None:
    import psycopg2

    url, artifacts, schema = mlflow_server
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = TrainConfig.model_validate({"label": {"horizon_days": 30},
                                         "split": {"backtest_folds": 1}})
    result = run_training(small_tables, config, tracking=url)
    assert result.tracking_uri == url and result.promotion["decision"] == "first"

    client = MlflowClient(url)
    champion = client.get_model_version_by_alias("churn-risk", "champion")
    assert str(champion.version) == result.model_version
    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model("models:/churn-risk@champion")
    frame = feature_rows(small_tables).drop(columns=["account_id", "as_of"]).astype(object)
    proba = np.asarray(model.predict(frame.where(frame.notna(), None)), dtype=float)
    assert proba.shape == (len(frame),) and ((proba >= 0) & (proba <= 1)).all()
    assert model.metadata.run_id == result.run_id

    # The run really lives in PostgreSQL, and its artifacts in the server's destination.
    with psycopg2.connect(PG_URL) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{schema}".runs WHERE run_uuid = %s', (result.run_id,))
        assert cur.fetchone()[0] == 1
    assert any(p.name == "booster.txt" for p in artifacts.rglob("booster.txt"))
    assert client.get_run(result.run_id).data.metrics["test_roc_auc"] == pytest.approx(
        result.metrics["roc_auc"])
