"""Hot reload against a real `mlflow server`: promote a new version while requests flow, refuse a
broken one, stop the registry -- the API keeps answering throughout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from serving.model import UNREACHABLE
from serving.store import ScoreStore
from tests.servers import clean_env, free_port, stop
from tests.serving.conftest import (
    PYFUNC_CODE,
    _tracking,
    start_server,
    train_tiny_booster,
    uvicorn_factory_argv,
    write_model_dir,
)
from tests.stores import empty_mlflow_store

pytestmark = pytest.mark.e2e

ONE = {"accounts": [{"account_id": "A1", "features": {"active_days_30d": 3, "plan": "growth"}}]}


def _start_mlflow(root: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """An MLflow server on ``root``'s store (a new one, or the same again on ``port``)."""
    port = port or free_port()
    if not (root / "registry.db").exists():
        empty_mlflow_store(root / "registry.db")  # the server would otherwise migrate a new file
    log = (root / "mlflow-server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'registry.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        env=clean_env({}), cwd=root, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((root / "mlflow-server.log").read_text())
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise AssertionError("mlflow server did not start:\n" + (root / "mlflow-server.log").read_text())


def _register(model_dir: Path, uri: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    code = model_dir / "tiny_pyfunc.py"
    code.write_text(PYFUNC_CODE)
    with _tracking(uri):
        mlflow.set_experiment("serving-lifecycle")
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(code),
                artifacts={"booster": str(model_dir / "artifacts" / "booster.txt"),
                           "metadata": str(model_dir / "artifacts" / "metadata.json")},
                registered_model_name="churn-risk", pip_requirements=["lightgbm"])
    version = str(info.registered_model_version)
    MlflowClient(uri).set_registered_model_alias("churn-risk", "champion", version)
    return version


def _wait(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_hot_reload_bad_version_registry_outage_and_restart(tmp_path, server_workdir):
    registry, uri = _start_mlflow(tmp_path)
    try:
        b1, e1 = train_tiny_booster(seed=0)
        v1 = _register(write_model_dir(tmp_path / "m1", b1, e1, trained_at="2026-01-01"), uri)
        store_url = f"sqlite:///{tmp_path / 'scores.db'}"
        ScoreStore(store_url).create()  # the API reads it read-only; `churn score` creates it
        env = {"CHURN_TRACKING_URI": uri, "CHURN_POLL_SECONDS": "0.5",
               "CHURN_SCORE_STORE_URL": store_url,
               # fail fast when the registry is down (MLflow retries for minutes by default)
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
        with start_server(uvicorn_factory_argv, env, server_workdir, ready=True) as server, \
                httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/v1/model").json()["version"] == v1
            results: list[tuple[int, str | None]] = []
            halt = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    while not halt.is_set():
                        r = c.post("/v1/scores", json=ONE)
                        results.append((r.status_code, r.json().get("model_version")))
                        time.sleep(0.01)

            worker = threading.Thread(target=load)
            worker.start()
            try:
                # 1. promote a new version: the server swaps to it
                b2, e2 = train_tiny_booster(seed=7)
                v2 = _register(write_model_dir(tmp_path / "m2", b2, e2,
                                               trained_at="2026-02-02"), uri)
                _wait(lambda: client.get("/v1/model").json()["version"] == v2, what="swap to v2")
                assert client.get("/v1/model").json()["trained_at"] == "2026-02-02"
                assert client.get("/readyz").json()["status"] == "ready"
                # 2. promote a broken version: refused, v2 keeps serving, /readyz says why
                broken = write_model_dir(tmp_path / "m3", b2, e2)
                (broken / "artifacts" / "booster.txt").write_text("not a model")
                v3 = _register(broken, uri)
                _wait(lambda: client.get("/readyz").json()["status"] == "degraded",
                      what="degraded after a bad version")
                ready = client.get("/readyz")
                assert ready.status_code == 200 and f"version {v3}" in ready.json()["reason"]
                assert client.get("/v1/model").json()["version"] == v2
                # 3. stop the registry: still serving v2, /readyz says the registry is down
                stop(registry)
                _wait(lambda: client.get("/readyz").json().get("reason", "")
                      == f"serving the last good model: {UNREACHABLE}",
                      what="registry outage in /readyz")
                time.sleep(1.0)
                assert client.post("/v1/scores", json=ONE).json()["model_version"] == v2
                # 4. restart the registry: reached again (and the broken v3 still refused)
                registry, _ = _start_mlflow(tmp_path, port=int(uri.rsplit(":", 1)[1]))
                _wait(lambda: f"version {v3}" in client.get("/readyz").json().get("reason", ""),
                      what="the registry reached again after its restart")
                assert client.post("/v1/scores", json=ONE).json()["model_version"] == v2
            finally:
                halt.set()
                worker.join(timeout=30)
            log = server.output()
        assert results and all(status == 200 for status, _ in results), set(results)
        versions = [v for _, v in results]
        assert set(versions) == {v1, v2}
        assert versions.index(v2) > versions.index(v1)
        assert versions[versions.index(v2):].count(v1) == 0  # never back to the old model
        assert '"event": "model_swapped"' in log and '"event": "model_reload_failed"' in log
        assert '"event": "model_check_failed"' in log
    finally:
        stop(registry)
