"""Security, input hygiene, observability and the history routes of the app in process
(FastAPI's TestClient, lifespan run): the tiny model loaded from a real MLflow registry, API keys
configured, a small body limit, a pre-filled score store."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.auth import key_digest, key_matches
from serving.observability import JsonFormatter
from serving.settings import ServingSettings
from serving.store import ScoreStore
from tests.serving.conftest import wait_for_model
from tests.serving.test_store import make_score

KEY = "test-key-5b1d9f0e2c7a"
OTHER_KEY = "second-key-77aa"
BODY_LIMIT = 6000
ONE = {"accounts": [{"account_id": "A1", "features": {"active_days_30d": 3, "plan": "growth"}}]}


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'scores.db'}"
    store = ScoreStore(url)
    store.write([make_score("A1", 0.2), make_score("B1", 0.6, "Churner", due=True, band="high")],
                as_of=dt.date(2026, 1, 1), model_name="churn-risk", model_version="1")
    store.write([make_score("A1", 0.4, "Wildcard")], as_of=dt.date(2026, 2, 1),
                model_name="churn-risk", model_version="1")
    # Another data set's model scored later: never part of the served model's answers.
    store.write([make_score("A1", 0.99, "Churner"), make_score("Z9", 0.9, "Churner")],
                as_of=dt.date(2026, 3, 1), model_name="sim-dev", model_version="9")
    store.engine.dispose()
    return url


class LogLines(logging.Handler):
    """The service's log lines, as its JSON formatter writes them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def secured(local_registry, store_url):
    """The log of the app ``client`` serves."""
    handler = LogLines()
    logging.getLogger("churn").addHandler(handler)
    yield handler
    logging.getLogger("churn").removeHandler(handler)


@pytest.fixture(scope="module")
def client(secured, local_registry, store_url):
    settings = ServingSettings(
        tracking_uri=local_registry.tracking_uri, model_uri="models:/churn-risk@champion",
        api_key_hashes=[key_digest(KEY), key_digest(OTHER_KEY)], max_body_bytes=BODY_LIMIT,
        score_store_url=store_url, log_level="info", poll_seconds=0,
        # explained with LightGBM's own TreeSHAP (test_server's uses the tables)
        treeshap="lightgbm")
    with TestClient(create_app(settings)) as c:
        assert wait_for_model(c)["status"] == "ready"
        yield c


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_key_matching_in_constant_time_helpers():
    digests = [key_digest("a"), key_digest("b")]
    assert key_matches("a", digests) and key_matches("b", digests)
    assert not key_matches("c", digests) and not key_matches("", digests)
    assert not key_matches(None, digests)


@pytest.mark.parametrize("path", ["/v1/model", "/v1/portfolio", "/v1/accounts", "/v1/accounts/A1"])
def test_v1_needs_a_valid_key(client, path):
    assert client.get(path).status_code == 401
    wrong = client.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers={"Authorization": KEY}).status_code == 401  # no scheme
    assert client.get(path, headers=AUTH).status_code == 200
    assert client.get(path, headers={"X-API-Key": OTHER_KEY}).status_code == 200


def test_scores_need_a_key_and_ops_routes_do_not(client, secured):
    assert client.post("/v1/scores", json=ONE).status_code == 401
    assert client.post("/v1/scores", json=ONE, headers=AUTH).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    log = secured.output()
    assert KEY not in log and OTHER_KEY not in log and key_digest(KEY) not in log


def test_body_over_the_limit_is_413_without_echo(client):
    secret = "payload-secret-9c1e"
    big = {"accounts": [{"account_id": f"{secret}-{i}", "features": {"active_days_30d": i}}
                        for i in range(200)]}
    raw = json.dumps(big).encode()
    assert len(raw) > BODY_LIMIT
    r = client.post("/v1/scores", content=raw, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"] and secret not in r.text

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(raw), 1000):
            yield raw[i:i + 1000]

    r = client.post("/v1/scores", content=chunks(),
                    headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and secret not in r.text


def test_422_does_not_echo_the_payload(client):
    secret = "do-not-echo-4411"
    r = client.post("/v1/scores", headers=AUTH, json={"accounts": [
        {"account_id": "A", "features": {"plan": 3, "mrr": secret, "nope": secret}}]})
    # Field names are named (that is the point of a 422); values never come back.
    assert r.status_code == 422 and secret not in r.text and r.json()["error_count"] == 3
    bad_json = client.post("/v1/scores", headers={**AUTH, "content-type": "application/json"},
                           content=b'{"accounts": [' + secret.encode())
    assert bad_json.status_code == 422 and secret not in bad_json.text


def test_cors_is_closed_by_default(client):
    pre = client.options("/v1/scores", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    r = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_request_id_and_json_request_log(client, secured):
    r = client.post("/v1/scores", json=ONE, headers={**AUTH, "X-Request-ID": "req-abc-123"})
    assert r.headers["x-request-id"] == "req-abc-123"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id <script>" + "x" * 80})
    assert len(unsafe.headers["x-request-id"]) == 32  # replaced, never reflected
    lines = [json.loads(line) for line in secured.output().splitlines()
             if line.startswith("{")]
    (entry,) = [e for e in lines if e.get("request_id") == "req-abc-123"]
    assert (entry["message"], entry["route"], entry["method"], entry["status"]) == (
        "request", "/v1/scores", "POST", 200)
    assert entry["duration_ms"] > 0 and "level" in entry and "ts" in entry
    assert any(e.get("event") == "model_loaded" for e in lines)


def test_prometheus_metrics(client, local_registry):
    for _ in range(3):
        client.post("/v1/scores", json=ONE, headers=AUTH)
    client.get("/v1/accounts/nobody", headers=AUTH)
    text = client.get("/metrics").text
    assert 'churn_http_request_duration_seconds_bucket{le="0.01",method="POST",route="/v1/scores",status="200"}' in text
    assert 'route="/v1/accounts/{account_id}",status="404"' in text  # the template, not the id
    assert "nobody" not in text
    count = next(line for line in text.splitlines()
                 if line.startswith("churn_score_churn_probability_count"))
    assert float(count.split()[-1]) >= 3
    assert f'churn_model_info{{alias="champion",name="churn-risk",version="{local_registry.version}"}} 1.0' in text


def test_account_history_and_portfolio_routes(client):
    a = client.get("/v1/accounts/A1", headers=AUTH).json()
    assert a["latest"]["as_of"] == "2026-02-01" and a["latest"]["quadrant"] == "Wildcard"
    assert a["latest"]["reasons"][0]["feature"] == "active_days_30d"
    assert [(h["as_of"], h["churn_probability"]) for h in a["history"]] == [
        ("2026-02-01", 0.4), ("2026-01-01", 0.2)]
    assert client.get("/v1/accounts/nobody", headers=AUTH).status_code == 404
    assert client.get("/v1/accounts/Z9", headers=AUTH).status_code == 404  # sim-dev's only
    latest = client.get("/v1/portfolio", headers=AUTH).json()
    assert latest["as_of"] == "2026-02-01" and latest["accounts"] == 1
    firing = {x["quadrant"]: x["firing"] for x in latest["alarms"]}
    assert firing == {"Churner": False, "Wildcard": True}  # 1 of 1 is a Wildcard
    first = client.get("/v1/portfolio?as_of=2026-01-01", headers=AUTH).json()
    assert first["quadrants"] == {"Advocate": 1, "Churner": 1} and first["survey_due"] == 1
    assert {x["quadrant"]: x["firing"] for x in first["alarms"]} == {
        "Churner": True, "Wildcard": False}
    assert client.get("/v1/portfolio?as_of=2019-01-01", headers=AUTH).status_code == 404


def test_model_info_has_lifecycle_fields(client, local_registry):
    info = client.get("/v1/model", headers=AUTH).json()
    assert (info["version"], info["alias"]) == (local_registry.version, "champion")
    assert info["trained_at"] and info["metrics"]["roc_auc"] == 0.75
    assert info["calibrated"] is False and info["features"]
    assert info["treeshap"] == "lightgbm"  # CHURN_TREESHAP reached the loader


def test_open_cors_when_configured(local_registry, tmp_path):
    settings = ServingSettings(tracking_uri=local_registry.tracking_uri, poll_seconds=0,
                               cors_origins=["https://cs.example"],
                               score_store_url=f"sqlite:///{tmp_path / 's.db'}")
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        ok = client.options("/v1/scores", headers={
            "Origin": "https://cs.example", "Access-Control-Request-Method": "POST"})
        assert ok.headers["access-control-allow-origin"] == "https://cs.example"
        other = client.options("/v1/scores", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers


def test_bulk_histogram_observation_equals_one_by_one():
    import numpy as np
    from prometheus_client import generate_latest

    from serving.observability import Metrics

    values = np.random.default_rng(0).uniform(0, 1, 500).tolist() + [0.05, 0.1, 1.0, 0.0]
    bulk, single = Metrics(), Metrics()
    bulk.observe_scores(values, [v * 100 for v in values])
    for v in values:
        single.probability.observe(v)
        single.health.observe(v * 100)
        single.accounts.inc()

    def samples(m):
        return [line for line in generate_latest(m.registry).decode().splitlines()
                if line.startswith(("churn_score", "churn_scored")) and "_created" not in line]

    bulk_lines, single_lines = samples(bulk), samples(single)
    assert len(bulk_lines) > 20
    for a, b in zip(bulk_lines, single_lines, strict=True):
        name_a, value_a = a.rsplit(" ", 1)
        name_b, value_b = b.rsplit(" ", 1)
        assert name_a == name_b and float(value_a) == pytest.approx(float(value_b))
