"""The API on real uvicorn servers (subprocesses on 127.0.0.1): start-up with and without a
model, parity with the logged pyfunc, several workers, the port claim and overload. The routes
themselves are tested in process (``test_routes.py``)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.auth import key_digest
from serving.loader import load_model
from serving.model import NOT_FOUND
from tests.servers import clean_env, free_port, uvicorn_factory_argv
from tests.serving.conftest import MAX_BATCH, start_server, wait_for_model
from tests.serving.test_routes import ACCOUNT, as_columns

#: The API key of the two-worker server.
WORKERS_KEY = "two-workers-key-7c1d"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(model_server):
    with httpx.Client(base_url=model_server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def unready(unready_server):
    with httpx.Client(base_url=unready_server.url, timeout=30) as client:
        yield client


# --- no model --------------------------------------------------------------------------------

def test_unready_server_is_alive_but_not_ready(unready):
    assert unready.get("/healthz").json() == {"status": "ok"}
    wait_for_model(unready)
    r = unready.get("/readyz")
    assert r.status_code == 503
    assert r.json()["reason"] == NOT_FOUND  # the public reason; the log has the store's path


# --- with a model ----------------------------------------------------------------------------

def test_ready(api, served_registry):
    assert api.get("/healthz").status_code == 200
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model_name": served_registry.model_name,
                        "model_version": str(served_registry.version), "store": "ok"}


def test_parity_with_the_logged_pyfunc(api, served_registry):
    """Features built from real data score the same through the API as through the pyfunc."""
    data_dir = served_registry.data_dir
    import mlflow.pyfunc
    import pandas as pd

    from features.pointintime import build_features
    from features.rows import scoring_rows
    from features.sources import load_tables

    tables = load_tables(data_dir)
    frame = build_features(tables, scoring_rows(tables).head(MAX_BATCH))
    names = [c for c in frame.columns if c not in ("account_id", "as_of")]
    accounts = []
    for row in frame.to_dict("records"):
        values = {}
        for name in names:
            v = row[name]
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                continue
            values[name] = v if isinstance(v, str) else float(v)
        accounts.append({"account_id": str(row["account_id"]), "features": values})
    r = api.post("/v1/scores", content=json.dumps({"accounts": accounts}),
                 headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    got = np.array([s["churn_probability"] for s in r.json()["scores"]])

    model_dir = load_model(f"models:/{served_registry.model_name}/{served_registry.version}",
                           served_registry.tracking_uri).source
    pyfunc = mlflow.pyfunc.load_model(model_dir)
    expected = np.asarray(pyfunc.predict(frame[names]), dtype=float)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


# --- serve() ---------------------------------------------------------------------------------

def _sockets(port: int, state: str) -> dict[int, set[str]]:
    """``{pid: socket inodes}`` of the server-side TCP sockets on ``port`` in ``state`` ("01"
    established, "0A" listening) per process holding one (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(f"socket:[{fields[9]}]")
    out: dict[int, set[str]] = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            held = {os.readlink(fd) for fd in fd_dir.iterdir()} & inodes
        except OSError:  # process gone or not ours
            continue
        if held:
            out[int(fd_dir.parent.name)] = held
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads connections from Linux /proc")
def test_serve_with_two_workers(local_registry, server_workdir):
    """`serve(settings)` (what `churn serve` calls) with 2 workers: settings reach the workers,
    and a burst of keep-alive connections is spread over both (one socket per worker)."""

    def argv(port: int) -> list[str]:
        code = ("from serving.app import serve; from serving.settings import ServingSettings; "
                f"serve(ServingSettings(host='127.0.0.1', port={port}, workers=2, "
                f"tracking_uri={local_registry.tracking_uri!r}, max_batch_size=2, "
                f"api_key_hashes=[{key_digest(WORKERS_KEY)!r}], "
                "log_level='warning', risk_bands={'low': 0.0, 'high': 0.5}))")
        return [sys.executable, "-c", code]

    auth = {"X-API-Key": WORKERS_KEY}
    with start_server(argv, {}, server_workdir, ready=True) as server:
        port = int(server.url.rsplit(":", 1)[1])
        # Both workers listen at once and load the model; wait until both answer ready.
        deadline = time.monotonic() + 60
        conns: list[socket.socket] = []
        while True:
            for sock in conns:
                sock.close()
            conns = []
            for _ in range(64):  # a client's connection pool, opened in a burst
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                conns.append(sock)
            ready = all(b" 200 " in sock.recv(4096).split(b"\r\n")[0] for sock in conns)
            per_worker = sorted(len(v) for v in _sockets(port, "01").values())
            if (ready and len(per_worker) == 2) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ready
        for sock in conns:
            sock.close()
        # One listening socket per worker (uvicorn's --workers share one, and whichever worker
        # wakes first accepts a whole burst), and the kernel hashes connections over them: each
        # worker gets about half (fewer than 16 of 64 has a probability of about 1e-4).
        listening = _sockets(port, "0A")
        assert len(listening) == 2 and len(set.union(*listening.values())) == 2, listening
        assert len(per_worker) == 2 and per_worker[0] >= 16, per_worker
        # A second server on the same port is refused, not silently joined through SO_REUSEPORT.
        assert_serve_refuses(port, local_registry.tracking_uri, server_workdir)

        # Each request on a new connection, so both workers score some; every scrape, whichever
        # worker answers it, reports the total over both (multiprocess metrics).
        for _ in range(8):
            r = httpx.post(server.url + "/v1/scores", json={"accounts": [ACCOUNT]}, timeout=30,
                           headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["scores"][0]["risk_band"] in {"low", "high"}
        r = httpx.post(server.url + "/v1/scores", json={"accounts": [ACCOUNT] * 3}, timeout=30,
                       headers=auth)
        assert r.status_code == 413
        # A console session opened on one worker holds on the other: they share one secret.
        login = httpx.post(server.url + "/ui/login", data={"key": WORKERS_KEY}, timeout=30)
        assert login.status_code == 303, login.text
        cookies = {"churn_console": login.cookies["churn_console"]}
        pages = [httpx.get(server.url + "/ui", cookies=cookies, timeout=30)
                 for _ in range(16)]  # a new connection each: both workers answer some
        # No worker sends the session back to the login page (a 303); with no score store yet,
        # each shows the page that says so.
        assert [p.status_code for p in pages] == [503] * 16, [p.status_code for p in pages]
        assert all("churn score" in p.text for p in pages)
        for _ in range(8):
            text = httpx.get(server.url + "/metrics", timeout=30).text
            assert "churn_scored_accounts_total 8.0" in text, text
            assert ('churn_model_info{alias="champion",name="churn-risk",'
                    f'version="{local_registry.version}"}} 1.0') in text

        # A worker that dies is replaced; the dead worker's counts stay in the totals.
        victim = min(listening)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            workers = set(_sockets(port, "0A"))
            if len(workers) == 2 and victim not in workers and "worker_restart" in server.output():
                break
            time.sleep(0.5)
        assert len(workers) == 2 and victim not in workers, workers
        assert '"event": "worker_restart"' in server.output()
        for _ in range(4):
            r = httpx.post(server.url + "/v1/scores", json={"accounts": [ACCOUNT]}, timeout=30,
                           headers=auth)
            assert r.status_code == 200, r.text
        assert "churn_scored_accounts_total 12.0" in httpx.get(server.url + "/metrics").text

        # A supervisor killed outright takes its workers with it: no orphans holding the port.
        os.kill(server.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _sockets(port, "0A") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _sockets(port, "0A")


def assert_serve_refuses(port: int, tracking_uri: str, cwd: Path) -> str:
    """A 2-worker `serve` on ``port`` exits with a clear error naming the port (returned)."""
    code = ("from serving.app import serve; from serving.settings import ServingSettings; "
            f"serve(ServingSettings(host='127.0.0.1', port={port}, workers=2, "
            f"tracking_uri={tracking_uri!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=cwd, env=clean_env({}))
    assert out.returncode != 0
    assert f"127.0.0.1:{port}" in out.stderr and "in use" in out.stderr.lower(), out.stderr
    return out.stderr


def test_serve_refuses_a_port_in_use(local_registry, tmp_path):
    """A taken port is a clear error naming it, not a silent share or a restart loop."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert_serve_refuses(taken.getsockname()[1], local_registry.tracking_uri, tmp_path)


def _socket_count(pid: int) -> int:
    try:
        return sum(os.readlink(fd).startswith("socket:") for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT workers are Linux-only")
def test_serve_refuses_a_port_whose_server_is_still_loading(tmp_path):
    """The window before a server listens: its workers have bound the port (with SO_REUSEPORT)
    but do not accept connections yet. A second server started then is refused too; before, it
    passed the port check and its workers joined the first one's. The first server's workers
    load before listening (as a restarted worker does) from a registry that never answers, so
    the window stays open for the whole check rather than for the instant a starting server
    takes to listen."""
    with socket.socket() as registry:  # a tracking server that never answers: loading hangs
        registry.bind(("127.0.0.1", 0))
        registry.listen()
        tracking_uri = f"http://127.0.0.1:{registry.getsockname()[1]}"
        port = free_port()
        code = ("from serving.app import serve; from serving.settings import ServingSettings; "
                f"serve(ServingSettings(host='127.0.0.1', port={port}, workers=2, "
                f"tracking_uri={tracking_uri!r}))")
        log = tmp_path / "first.log"
        with log.open("wb") as fh:
            first = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=fh,
                                     stderr=subprocess.STDOUT,
                                     env=clean_env({"CHURN_LOAD_BEFORE_LISTENING": "true"}),
                                     start_new_session=True)
        try:
            # Wait until both workers hold a socket: they bind the port before loading (the
            # supervisor's other child, multiprocessing's resource tracker, holds none).
            deadline = time.monotonic() + 60
            workers: list[int] = []
            while len(workers) < 2 and time.monotonic() < deadline and first.poll() is None:
                workers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat")
                           if _parent_pid(p) == first.pid and _socket_count(int(p.parent.name))]
                time.sleep(0.1)
            assert len(workers) == 2, log.read_text()
            out = assert_serve_refuses(port, tracking_uri, tmp_path)
            assert "another churn serve" in out
            assert first.poll() is None and not _sockets(port, "0A"), "the first one must still be loading"
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the claim is Linux-only")
def test_port_claim_is_exclusive_and_a_forbidden_claim_only_warns(monkeypatch, caplog):
    """A second claim of a port is refused until the first is released. Where the abstract
    socket namespace is forbidden (a sandbox: EACCES), the server starts without the check."""
    import errno

    from serving import workers

    port = free_port()
    with workers.claim_port("127.0.0.1", port):
        with pytest.raises(OSError, match=f"127.0.0.1:{port}: address already in use"), \
                workers.claim_port("127.0.0.1", port):
            pass
    with workers.claim_port("127.0.0.1", port):  # released: free again
        pass

    class Forbidden(socket.socket):
        def bind(self, address):
            raise PermissionError(errno.EACCES, "forbidden by the sandbox")

    monkeypatch.setattr(workers.socket, "socket", Forbidden)
    with caplog.at_level("WARNING", logger="churn.serving.workers"), \
            workers.claim_port("127.0.0.1", port):
        pass
    assert any(getattr(r, "event", None) == "port_claim_failed" for r in caplog.records)


def _parent_pid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# --- overload ---------------------------------------------------------------------------------

def test_big_requests_beyond_the_queue_limit_get_503_with_retry_after(local_registry,
                                                                      server_workdir):
    """Many big requests at once on one worker: while one is scored, the others do not fit the
    queue (limit 1 account) and are refused with 503, Retry-After and a message that does not echo
    the payload; the worker still answers single accounts, and big requests again once idle."""
    env = {"CHURN_TRACKING_URI": local_registry.tracking_uri,
           "CHURN_MODEL_URI": "models:/churn-risk@champion", "CHURN_MICRO_BATCH_ROWS": "2",
           "CHURN_MAX_QUEUED_ACCOUNTS": "1", "CHURN_REASONS_TOP": "200"}
    accounts = [{"account_id": f"SECRET-{i}", "features": {
        **ACCOUNT["features"], "active_days_30d": i % 31}} for i in range(1000)]
    from concurrent.futures import ThreadPoolExecutor

    with start_server(uvicorn_factory_argv, env, server_workdir, ready=True) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        with ThreadPoolExecutor(max_workers=8) as pool:
            # Every reason of every account: each batch keeps the worker's thread busy a while.
            answers = list(pool.map(lambda _: client.post("/v1/scores", json={
                "accounts": accounts}), range(8)))
            single = client.post("/v1/scores", json={"accounts": [ACCOUNT]})
        codes = sorted(r.status_code for r in answers)
        assert set(codes) == {200, 503}, codes
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert "busy" in r.json()["detail"] and "SECRET" not in r.text
        assert single.status_code == 200, single.text
        again = client.post("/v1/scores", json={"accounts": accounts[:100]})
        assert again.status_code == 200 and len(again.json()["scores"]) == 100
        # The same accounts column by column: a big request too (scored as AccountColumns on the
        # worker's thread), with the same answer.
        columns = client.post("/v1/scores/columns", json=as_columns(accounts[:100]))
        assert columns.status_code == 200, columns.text
        assert columns.json() == again.json()
