"""The logged pyfunc returns the same calibrated probabilities everywhere: in process, behind a real
`mlflow models serve --env-manager local`, and from our own API (a real uvicorn server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from features.rows import feature_rows
from tests.servers import clean_env, free_port, start_server, stop

pytestmark = pytest.mark.e2e


def _mlflow_models_serve(model_uri: str, tracking_uri: str, workdir: Path):
    port = free_port()
    log = workdir / "mlflow-models-serve.log"
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
            "local", "--host", "127.0.0.1", "--port", str(port)]
    # MLflow execs `uvicorn` by name: the environment's bin directory must be on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, env=clean_env({"MLFLOW_TRACKING_URI": tracking_uri,
                                                      "PATH": path}),
                                cwd=workdir, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise AssertionError(f"mlflow models serve did not come up:\n{log.read_text(errors='replace')}")


def test_mlflow_models_serve_and_our_api_return_the_same_probabilities(
        registered_model, default_tables, tmp_path: Path) -> None:
    uri = f"models:/churn-risk/{registered_model.version}"
    frame = feature_rows(default_tables).head(40)
    features = frame.drop(columns=["account_id", "as_of"]).astype(object)
    features = features.where(features.notna(), None)
    mlflow.set_tracking_uri(registered_model.tracking_uri)
    in_process = np.asarray(mlflow.pyfunc.load_model(uri).predict(features), dtype=float)
    assert ((in_process > 0) & (in_process < 1)).all() and len(np.unique(in_process)) > 10

    # As a JSON caller sends them: whole numbers as integers, missing values as null, and one
    # feature left out entirely (the signature makes every feature optional).
    def plain(v):
        return int(v) if isinstance(v, float) and v.is_integer() else v

    partial = features.drop(columns=["mrr"])
    partial_in_process = np.asarray(mlflow.pyfunc.load_model(uri).predict(partial), dtype=float)
    proc, url = _mlflow_models_serve(uri, registered_model.tracking_uri, tmp_path)
    try:
        served = {}
        for name, frame_ in (("full", features), ("partial", partial)):
            body = {"dataframe_split": {"columns": list(frame_.columns),
                                        "data": [[plain(v) for v in row]
                                                 for row in frame_.to_numpy().tolist()]}}
            answer = httpx.post(f"{url}/invocations", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            served[name] = np.asarray(answer.json()["predictions"], dtype=float)
    finally:
        stop(proc)
    np.testing.assert_allclose(served["full"], in_process, rtol=0, atol=1e-9)
    np.testing.assert_allclose(served["partial"], partial_in_process, rtol=0, atol=1e-9)
    assert not np.allclose(partial_in_process, in_process)  # mrr mattered: it really was missing

    accounts = [{"account_id": a, "features": {k: v for k, v in f.items() if v is not None}}
                for a, f in zip(frame.account_id, features.to_dict("records"), strict=True)]

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "cli.main", "serve", "--port", str(port),
                "--tracking-uri", registered_model.tracking_uri, "--model-uri", uri]

    with start_server(argv, {}, tmp_path, ready=True) as server:
        answer = httpx.post(f"{server.url}/v1/scores", json={"accounts": accounts}, timeout=60)
    assert answer.status_code == 200, answer.text
    ours = np.asarray([s["churn_probability"] for s in answer.json()["scores"]], dtype=float)
    # Our API may round for display; equal to its precision.
    np.testing.assert_allclose(ours, in_process, rtol=0, atol=1e-6)
