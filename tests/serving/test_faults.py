"""Faults: SIGTERM of a server under load, SIGKILL of ``churn score`` in the middle of a run.

(The registry stopped under a serving server is in ``test_lifecycle.py``; corrupt and cut
artifacts and an unreachable score store in ``test_hardening.py``.)
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd

from tests.servers import clean_env, start_server
from tests.serving.test_hardening_server import serve_argv
from tests.serving.test_routes import ACCOUNT


def test_sigterm_under_load_finishes_in_flight_requests(local_registry, server_workdir):
    env = {"CHURN_TRACKING_URI": local_registry.tracking_uri, "CHURN_POLL_SECONDS": "0",
           "CHURN_LOG_REQUESTS": "false"}
    statuses: list[int] = []
    refused: list[str] = []
    with start_server(serve_argv, env, server_workdir, ready=True) as server:
        halt = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not halt.is_set():
                    try:
                        statuses.append(client.post("/v1/scores",
                                                    json={"accounts": [ACCOUNT] * 20}).status_code)
                    except httpx.TransportError as exc:  # after the socket closed: never a 5xx
                        refused.append(type(exc).__name__)
                        time.sleep(0.01)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        os.kill(server.process.pid, signal.SIGTERM)
        code = server.process.wait(timeout=30)
        halt.set()
        for thread in threads:
            thread.join(timeout=30)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert "Finished server process" in server.output() or code == 0
    assert statuses and set(statuses) == {200}, set(statuses)


def _dates(data: Path, n: int) -> list[str]:
    end = pd.to_datetime(pd.read_parquet(data / "usage_events.parquet", columns=["timestamp"])
                         ["timestamp"]).max().normalize()
    return [(end - pd.Timedelta(days=30 * k)).strftime("%Y-%m-%d") for k in range(n)][::-1]


def _rows_per_date(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute("SELECT as_of, COUNT(*) FROM churn_scores GROUP BY as_of")
            return {str(d): n for d, n in rows}
        except sqlite3.OperationalError:  # the table is not created yet
            return {}


def test_sigkill_of_churn_score_leaves_whole_dates_and_a_rerun_completes(
        default_data_dir, tiny_model_dir, tmp_path):
    db = tmp_path / "scores.db"
    dates = _dates(default_data_dir, 8)
    argv = [str(Path(sys.executable).with_name("churn")), "score", "--data", str(default_data_dir),
            "--model-uri", str(tiny_model_dir), "--store-url", f"sqlite:///{db}",
            "--as-of", ",".join(dates)]
    env = clean_env({"CHURN_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}"})
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not _rows_per_date(db) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.kill()
    proc.wait(timeout=30)
    assert killed, "churn score finished before it could be killed: " + proc.stderr.read().decode()
    survived = _rows_per_date(db)
    assert survived and len(survived) < len(dates)
    rerun = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    final = _rows_per_date(db)
    assert len(final) == len(dates)
    for as_of, count in survived.items():  # one transaction per date: never a partial date
        assert count == final[as_of], (as_of, count, final[as_of])
