"""API tests against real uvicorn servers (subprocesses on 127.0.0.1)."""

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

from serving.loader import load_model
from serving.scoring import score_accounts
from tests.servers import clean_env, free_port, uvicorn_factory_argv
from tests.serving.conftest import MAX_BATCH, register_model_dir, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(model_server):
    with httpx.Client(base_url=model_server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def unready(unready_server):
    with httpx.Client(base_url=unready_server.url, timeout=30) as client:
        yield client


ACCOUNT = {"account_id": "A1", "features": {
    "active_days_30d": 12, "active_users_per_seat_30d": 0.5, "catalogue_share_30d": 0.3,
    "events_trend_30d": -0.2, "proactive_touchpoints_90d": 1, "days_since_last_proactive": 40,
    "reactive_touchpoints_90d": 3, "open_tickets": 1, "last_nps": 6, "nps_bucket": "detractor",
    "csat_satisfied_share_180d": 0.5, "plan": "growth", "seats": 25, "mrr": 625.0,
    "tenure_days": 400, "industry": "retail", "segment": "MidMarket"}}


# --- no model --------------------------------------------------------------------------------

def test_unready_server_is_alive_but_not_ready(unready):
    assert unready.get("/healthz").json() == {"status": "ok"}
    r = unready.get("/readyz")
    assert r.status_code == 503
    reason = r.json()["reason"]
    assert "No registered model named 'churn-risk'" in reason and "churn train" in reason


def test_unready_server_answers_503_on_v1(unready):
    r = unready.post("/v1/scores", json={"accounts": [ACCOUNT]})
    assert r.status_code == 503
    assert "churn train" in r.json()["detail"]
    assert unready.get("/v1/model").status_code == 503


# --- with a model ----------------------------------------------------------------------------

def test_ready(api, served_registry):
    assert api.get("/healthz").status_code == 200
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model_name": served_registry.model_name,
                        "model_version": str(served_registry.version)}


def test_model_info(api, served_registry):
    info = api.get("/v1/model").json()
    assert (info["name"], info["version"], info["alias"]) == (
        served_registry.model_name, str(served_registry.version), "champion")
    assert info["horizon_days"] == 90 and info["trained_at"]
    assert "roc_auc" in info["metrics"]
    features = {f["name"]: f for f in info["features"]}
    assert "active_days_30d" in features and "plan" in features
    assert all(f["description"] for f in features.values())
    assert features["plan"]["dtype"] == "category" and features["plan"]["categories"]
    assert features["active_days_30d"]["categories"] is None
    assert info["scoring"]["max_batch_size"] == MAX_BATCH
    assert info["scoring"]["risk_bands"] == {"high": 0.3, "medium": 0.1, "low": 0.0}
    # churn train's trees (depth 5) are explained by the tables, checked against LightGBM at load
    assert info["treeshap"] == "tables"


def test_score_one_account(api, served_registry):
    r = api.post("/v1/scores", json={"accounts": [ACCOUNT]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == served_registry.model_name
    assert body["model_version"] == str(served_registry.version)
    assert body["horizon_days"] == 90
    (score,) = body["scores"]
    assert set(score) == {"account_id", "churn_probability", "risk_band", "health_score",
                          "health_band", "components", "weights", "missing_features",
                          "components_without_data", "health_note", "quadrant", "survey_due",
                          "survey_due_reasons", "raw_score", "reasons", "reasons_rest"}
    assert len(score["reasons"]) == 3 and all(r["text"] for r in score["reasons"])
    assert score["quadrant"] == "Wildcard"  # NPS 6 (detractor), half the CSAT answers satisfied
    assert score["account_id"] == "A1"
    assert 0.0 <= score["churn_probability"] <= 1.0
    assert score["risk_band"] in {"low", "medium", "high"}
    assert 0.0 <= score["health_score"] <= 100.0
    assert score["health_band"] in {"green", "amber", "red"}
    assert set(score["components"]) == {"usage", "engagement", "sentiment", "risk"}
    assert all(v is not None for v in score["components"].values())
    assert sum(score["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "plan" not in score["missing_features"]
    assert "events_30d" in score["missing_features"]

    # The server's answer is exactly what the library computes on the same registered model.
    model = load_model(f"models:/{served_registry.model_name}@champion",
                       served_registry.tracking_uri)
    (expected,) = score_accounts(model, [("A1", ACCOUNT["features"])])
    assert score["churn_probability"] == pytest.approx(expected.churn_probability, abs=1e-12)
    assert score["health_score"] == expected.health_score


def test_reasons_add_up_to_the_models_raw_score(api, served_registry):
    model = load_model(f"models:/{served_registry.model_name}@champion",
                       served_registry.tracking_uri)
    n = len(model.encoder.feature_names)
    r = api.post(f"/v1/scores?reasons={n}", json={"accounts": [ACCOUNT]})
    assert r.status_code == 200, r.text
    (score,) = r.json()["scores"]
    raw = model.booster.predict(model.encoder.transform_records([ACCOUNT["features"]]),
                                raw_score=True)[0]
    assert score["raw_score"] == pytest.approx(raw, abs=1e-9)
    total = sum(reason["contribution"] for reason in score["reasons"]) + score["reasons_rest"]
    assert total == pytest.approx(raw, abs=1e-9)
    # probability = sigmoid(raw score), then the training calibration when the model has one
    p = 1 / (1 + math.exp(-raw))
    if model.calibrated:
        from features.scorer import calibrate

        p = float(calibrate(np.array([p]), model.metadata["calibration"])[0])
    assert r.json()["calibrated"] is model.calibrated
    assert score["churn_probability"] == pytest.approx(p, abs=1e-12)
    for reason in score["reasons"]:
        assert reason["direction"] == ("raises_risk" if reason["contribution"] > 0
                                       else "lowers_risk")
    sent = {x["feature"]: x for x in score["reasons"] if x["feature"] in ACCOUNT["features"]}
    assert sent["active_days_30d"]["text"] == (
        "Days with any product use in the last 30 days: 12 days")


def test_explain_false_skips_reasons(api):
    with_reasons = api.post("/v1/scores", json={"accounts": [ACCOUNT]}).json()["scores"][0]
    r = api.post("/v1/scores?explain=false", json={"accounts": [ACCOUNT]})
    assert r.status_code == 200
    (score,) = r.json()["scores"]
    assert score["reasons"] is None and score["reasons_rest"] is None
    assert score["churn_probability"] == pytest.approx(with_reasons["churn_probability"], abs=1e-12)
    assert api.post("/v1/scores?reasons=0", json={"accounts": [ACCOUNT]}).status_code == 422


def test_renormalisation_is_stated(api):
    features = {k: v for k, v in ACCOUNT["features"].items()
                if k not in ("last_nps", "nps_bucket", "csat_satisfied_share_180d")}
    r = api.post("/v1/scores", json={"accounts": [{"account_id": "A", "features": features}]})
    (score,) = r.json()["scores"]
    assert score["components_without_data"] == ["sentiment"]
    assert score["weights"]["sentiment"] == 0.0
    assert score["health_note"].startswith("No data for sentiment: its weight 0.2 was shared")
    assert score["quadrant"] is None


def test_missing_features_and_no_data_components(api):
    r = api.post("/v1/scores", json={"accounts": [{"account_id": "bare", "features": {}},
                                                  {"account_id": "none"}]})
    assert r.status_code == 200, r.text
    for score in r.json()["scores"]:
        assert score["components"]["usage"] is None and score["components"]["sentiment"] is None
        assert score["weights"]["risk"] == 1.0 and score["weights"]["usage"] == 0.0
        assert "plan" in score["missing_features"]


def test_batch_limit(api):
    accounts = [{**ACCOUNT, "account_id": f"A{i}"} for i in range(MAX_BATCH)]
    ok = api.post("/v1/scores", json={"accounts": accounts})
    assert ok.status_code == 200
    assert [s["account_id"] for s in ok.json()["scores"]] == [a["account_id"] for a in accounts]
    too_many = api.post("/v1/scores", json={"accounts": [*accounts, ACCOUNT]})
    assert too_many.status_code == 413
    assert f"limit {MAX_BATCH}" in too_many.json()["detail"]


def test_unknown_feature_is_422_naming_it_without_echoing_the_payload(api):
    secret = "do-not-echo-7f3a"
    r = api.post("/v1/scores", json={"accounts": [
        {"account_id": secret, "features": {"active_days_30d": 3, "favourite_colour": secret}}]})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["field"] == "accounts[0].features.favourite_colour"
    assert "favourite_colour" in error["msg"]
    assert secret not in r.text


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(api, token):
    raw = '{"accounts": [{"account_id": "A", "features": {"mrr": TOKEN}}]}'.replace("TOKEN", token)
    r = api.post("/v1/scores", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["field"] == "accounts[0].features.mrr" and "finite" in error["msg"]


@pytest.mark.parametrize(("features", "field", "words"), [
    ({"active_days_30d": "12"}, "active_days_30d", "number"),
    ({"active_days_30d": True}, "active_days_30d", "number"),
    ({"plan": 3}, "plan", "string"),
])
def test_wrong_types_are_422(api, features, field, words):
    r = api.post("/v1/scores", json={"accounts": [{"account_id": "A", "features": features}]})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["field"] == f"accounts[0].features.{field}" and words in error["msg"]


def test_malformed_bodies_are_422(api):
    assert api.post("/v1/scores", content=b"{not json",
                    headers={"content-type": "application/json"}).status_code == 422
    assert api.post("/v1/scores", json={"accounts": []}).status_code == 422
    assert api.post("/v1/scores", json={"rows": []}).status_code == 422
    r = api.post("/v1/scores", json={"accounts": [{"features": {}}]})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "accounts[0].account_id"


def as_columns(accounts: list[dict]) -> dict:
    """The body of ``POST /v1/scores/columns`` for the same accounts as a ``/v1/scores`` body."""
    names = sorted({name for a in accounts for name in a["features"]})
    return {"account_id": [a["account_id"] for a in accounts],
            "features": {n: [a["features"].get(n) for a in accounts] for n in names}}


def test_columns_score_like_records(api):
    accounts = [ACCOUNT, {"account_id": "B2", "features": {"plan": "starter", "mrr": None}},
                {"account_id": "C3", "features": {}},
                {"account_id": "D4", "features": {**ACCOUNT["features"], "active_days_30d": 0,
                                                  "csat_nps_quadrant": "Wildcard"}}]
    for query in ("", "?explain=false", "?reasons=2"):
        by_records = api.post(f"/v1/scores{query}", json={"accounts": accounts})
        by_columns = api.post(f"/v1/scores/columns{query}", json=as_columns(accounts))
        assert by_records.status_code == by_columns.status_code == 200, by_columns.text
        assert by_columns.json() == by_records.json()
    # No features at all: every account is scored with everything missing.
    r = api.post("/v1/scores/columns", json={"account_id": ["X", 7]})
    assert r.status_code == 200, r.text
    assert [s["account_id"] for s in r.json()["scores"]] == ["X", "7"]
    assert r.json()["scores"][0]["missing_features"]


def test_columns_keep_input_hygiene(api):
    secret = "do-not-echo-7f3a"

    def post(features, ids=("A", "B")):
        return api.post("/v1/scores/columns", json={"account_id": list(ids), "features": features})

    r = post({"favourite_colour": [secret, secret]})
    assert r.status_code == 422 and secret not in r.text
    assert r.json()["detail"][0]["field"] == "features.favourite_colour"
    assert "Unknown feature" in r.json()["detail"][0]["msg"]
    r = post({"mrr": [1.0], "seats": [1, 2, 3], "plan": ["growth", None]})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["detail"]} == {"features.mrr", "features.seats"}
    assert "1 values for 2 account_id" in r.text
    r = post({"active_days_30d": [3, "12"]})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "features.active_days_30d[1]"
    assert post({"plan": ["growth", 3]}).status_code == 422
    raw = '{"account_id": ["A"], "features": {"mrr": [NaN]}}'
    r = api.post("/v1/scores/columns", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["detail"][0]["msg"]
    assert api.post("/v1/scores/columns", json={"account_id": []}).status_code == 422
    assert api.post("/v1/scores/columns", json={"accounts": [ACCOUNT]}).status_code == 422
    too_many = api.post("/v1/scores/columns", json={"account_id": [str(i) for i in
                                                                   range(MAX_BATCH + 1)]})
    assert too_many.status_code == 413 and f"limit {MAX_BATCH}" in too_many.json()["detail"]


def test_many_errors_are_capped(api):
    accounts = [{"account_id": "A", "features": {f"bad_{i}": 1 for i in range(30)}}]
    r = api.post("/v1/scores", json={"accounts": accounts})
    assert r.status_code == 422
    assert r.json()["error_count"] == 30 and len(r.json()["detail"]) == 20


def test_openapi_documents_the_features(api):
    spec = api.get("/openapi.json").json()
    features = spec["components"]["schemas"]["AccountFeatures"]["properties"]
    assert "Days with any product use in the last 30 days" in features["active_days_30d"][
        "description"]
    assert "/v1/scores" in spec["paths"]


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
                "log_level='warning', risk_bands={'low': 0.0, 'high': 0.5}))")
        return [sys.executable, "-c", code]

    with start_server(argv, {}, server_workdir, ready=True) as server:
        port = int(server.url.rsplit(":", 1)[1])
        # Both workers load the model before they listen; wait until both answer.
        deadline = time.monotonic() + 60
        conns: list[socket.socket] = []
        while True:
            for sock in conns:
                sock.close()
            conns = []
            for _ in range(64):  # a client's connection pool, opened in a burst
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: churn\r\n\r\n")
                conns.append(sock)
            assert all(b" 200 " in sock.recv(4096).split(b"\r\n")[0] for sock in conns)
            per_worker = sorted(len(v) for v in _sockets(port, "01").values())
            if len(per_worker) == 2 or time.monotonic() > deadline:
                break
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
            r = httpx.post(server.url + "/v1/scores", json={"accounts": [ACCOUNT]}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["scores"][0]["risk_band"] in {"low", "high"}
        r = httpx.post(server.url + "/v1/scores", json={"accounts": [ACCOUNT] * 3}, timeout=30)
        assert r.status_code == 413
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
            r = httpx.post(server.url + "/v1/scores", json={"accounts": [ACCOUNT]}, timeout=30)
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
    but are still loading the model. A second server started then is refused too; before, it
    passed the port check and its workers joined the first one's."""
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
                                     stderr=subprocess.STDOUT, env=clean_env({}),
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


def test_concurrent_requests_match_sequential_ones(api):
    """The booster is shared by the threadpool; concurrent answers must equal sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"accounts": [{"account_id": f"A{i}", "features": {
        **ACCOUNT["features"], "active_days_30d": i % 31, "seats": 5 + i}}]} for i in range(40)]
    sequential = [api.post("/v1/scores", json=b).json()["scores"][0] for b in bodies]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(
            lambda b: api.post("/v1/scores", json=b).json()["scores"][0], bodies))
    assert concurrent == sequential


# --- a model trained through a data-set mapping ------------------------------------------------

@pytest.fixture(scope="module")
def mapped_api(mapped_model_dir, server_workdir, tmp_path_factory):
    """A server on a model whose features include ones outside the built-in catalogue."""
    reg = register_model_dir(mapped_model_dir, tmp_path_factory.mktemp("mapped-registry"))
    env = {"CHURN_TRACKING_URI": reg.tracking_uri, "CHURN_MODEL_URI": "models:/churn-risk@champion"}
    with start_server(uvicorn_factory_argv, env, server_workdir, ready=True) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_model_with_mapped_features_is_served(mapped_api):
    features = {**ACCOUNT["features"], "key_report_views_30d": 0, "channel": "web"}
    r = mapped_api.post("/v1/scores", json={"accounts": [{"account_id": "A", "features": features}]})
    assert r.status_code == 200, r.text
    score = r.json()["scores"][0]
    assert "key_report_views_30d" not in score["missing_features"]
    assert "channel" not in score["missing_features"]
    texts = [reason["text"] for reason in score["reasons"]]
    assert any(t.startswith("Report views in the last 30 days: 0") for t in texts), texts

    columns = mapped_api.post("/v1/scores/columns", json=as_columns(
        [{"account_id": "A", "features": features}]))
    assert columns.status_code == 200 and columns.json() == r.json(), columns.text
    unknown = mapped_api.post("/v1/scores/columns", json={"account_id": ["A"], "features": {
        "key_unknown_30d": [1]}})
    assert unknown.status_code == 422 and "key_unknown_30d" in unknown.text

    info = {f["name"]: f for f in mapped_api.get("/v1/model").json()["features"]}
    assert info["key_report_views_30d"]["description"] == "Report views in the last 30 days"
    assert info["channel"]["categories"] == ["direct", "partner", "web"]


def test_mapped_features_keep_input_hygiene(mapped_api):
    def post(features):
        return mapped_api.post("/v1/scores", json={"accounts": [
            {"account_id": "A", "features": features}]})

    r = post({"key_unknown_30d": 1})
    assert r.status_code == 422 and "key_unknown_30d" in r.text
    assert post({"channel": 3}).status_code == 422  # a category takes strings
    assert post({"key_report_views_30d": "many"}).status_code == 422


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
