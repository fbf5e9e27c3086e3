"""End to end, as a user runs it: `churn demo` generates data, trains, scores and serves on a real
uvicorn server on 127.0.0.1; its printed example, its portfolio and the rows `churn features`
builds from its data are scored over HTTP."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.servers import start_server

pytestmark = pytest.mark.e2e
CHURN = [sys.executable, "-m", "cli.main"]


def churn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CHURN, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"churn {' '.join(args)} failed:\n{done.stderr}"
    return done


def _wait_for(server, text: str, timeout: float = 30) -> str:
    """The server's output once it holds ``text`` (the demo announces after /readyz)."""
    import time

    deadline = time.monotonic() + timeout
    while text not in server.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    return server.output()


def test_demo_generates_trains_scores_and_serves_the_printed_example(tmp_path: Path) -> None:
    def argv(port: int) -> list[str]:
        return [*CHURN, "demo", "--workdir", str(tmp_path / "demo"), "--port", str(port),
                "--accounts", "300", "--months", "14"]

    with start_server(argv, {}, tmp_path, ready=True, timeout=300) as server:
        output = _wait_for(server, "MLflow UI:")
        lines = output.splitlines()
        ready = next(i for i, line in enumerate(lines) if "The API is ready" in line)
        curl = next(line for line in lines[ready:] if line.startswith("curl "))
        # The portfolio answers at once: the demo scored every account into the score store.
        portfolio = httpx.get(f"{server.url}/v1/portfolio", timeout=30)
        assert portfolio.status_code == 200, portfolio.text
        assert portfolio.json()["accounts"] > 100
        # ... and so does the CS console, at the address the demo printed (no login on loopback).
        console = next(line for line in lines if line.startswith("CS console"))
        assert console.rsplit(" ", 1)[1] == f"{server.url}/ui"
        page = httpx.get(f"{server.url}/ui", timeout=30)
        assert page.status_code == 200
        assert f"{portfolio.json()['accounts']:,} accounts scored on" in page.text
        mlflow_ui = next(line for line in lines if line.startswith("MLflow UI: "))
        command = shlex.split(mlflow_ui[len("MLflow UI: "):])[0]
        assert Path(tmp_path, command).exists() or Path(command).exists(), mlflow_ui
        words = shlex.split(curl)
        body = json.loads(words[words.index("-d") + 1])
        assert words[words.index("-X") + 2] == f"{server.url}/v1/scores"
        answer = httpx.post(f"{server.url}/v1/scores", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        scores = answer.json()["scores"]
        assert len(scores) == len(body["accounts"]) >= 1
        assert all(0 <= s["churn_probability"] <= 1 for s in scores)
        # `churn features` on the demo's data gives rows the served model scores as they are.
        today = tmp_path / "today.parquet"
        churn("features", "--data", str(tmp_path / "demo" / "data"), "--out", str(today),
              cwd=tmp_path)
        _scores_the_feature_rows(server.url, pd.read_parquet(today))
    assert (tmp_path / "demo" / "mlflow.db").exists()


def _scores_the_feature_rows(url: str, today: pd.DataFrame) -> None:
    assert len(today) > 100 and today.as_of.nunique() == 1
    rows = today.head(25)
    values = rows.drop(columns=["account_id", "as_of"]).astype(object)
    accounts = [{"account_id": a, "features": f} for a, f in zip(
        rows.account_id, values.where(values.notna(), None).to_dict("records"), strict=True)]
    model = httpx.get(f"{url}/v1/model").json()
    assert model["version"] == "1" and len(model["features"]) > 20
    answer = httpx.post(f"{url}/v1/scores", json={"accounts": accounts}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "churn-risk" and body["model_version"] == "1"
    scores = body["scores"]
    assert [s["account_id"] for s in scores] == list(rows.account_id)
    proba = [s["churn_probability"] for s in scores]
    assert all(0 <= p <= 1 for p in proba) and len(set(proba)) > 1
    assert all(0 <= s["health_score"] <= 100 for s in scores)
    # The scores the demo stored for that date, as the worklist and the console show them.
    worklist = httpx.get(f"{url}/v1/accounts", params={"limit": 5}).json()
    assert worklist["total"] == len(today) and len(worklist["accounts"]) == 5
    console = httpx.get(f"{url}/ui/accounts")
    assert console.status_code == 200
    assert f'/ui/accounts/{worklist["accounts"][0]["account_id"]}"' in console.text
