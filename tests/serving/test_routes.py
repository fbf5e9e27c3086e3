"""The routes and request schemas in process (FastAPI's TestClient), with the served model
swapped in through ``app.dependency_overrides``: a real LightGBM model, no registry, no server.
Real uvicorn servers are in ``test_server.py``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.deps import NO_MODEL, get_model
from serving.app import create_app
from serving.lifecycle import LOADING
from serving.model import NOT_FOUND, LoadedModel, load_from_dir
from serving.scoring import score_accounts
from serving.settings import ServingSettings
from tests.serving.conftest import local_client, train_tiny_booster

MAX_BATCH = 5
#: The address of a client on this machine (TestClient's default is no address at all).
#: A sigmoid calibration, so the route's probabilities go through one.
CALIBRATION = {"method": "sigmoid", "a": 0.8, "b": -0.3}
ACCOUNT = {"account_id": "A1", "features": {
    "active_days_30d": 12, "active_users_per_seat_30d": 0.5, "catalogue_share_30d": 0.3,
    "events_trend_30d": -0.2, "proactive_touchpoints_90d": 1, "days_since_last_proactive": 40,
    "reactive_touchpoints_90d": 3, "open_tickets": 1, "last_nps": 6, "nps_bucket": "detractor",
    "csat_satisfied_share_180d": 0.5, "plan": "growth", "seats": 25, "mrr": 625.0,
    "tenure_days": 400, "industry": "retail", "segment": "MidMarket"}}


@contextmanager
def client_for(model: LoadedModel | None, empty_store: str, tmp_path: Path,
               **settings: object) -> Iterator[TestClient]:
    """A TestClient of the real app, its lifespan run (one event loop for every request, as in a
    server), whose served model is ``model``; with None, whatever the lifespan loads from an
    empty registry: nothing."""
    app = create_app(ServingSettings(tracking_uri=empty_store, poll_seconds=0,
                                     score_store_url=f"sqlite:///{tmp_path / 'scores.db'}",
                                     **settings))
    if model is not None:
        app.dependency_overrides[get_model] = lambda: model
    with local_client(app) as client:
        yield client


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    booster, encoder = train_tiny_booster(seed=4)
    return LoadedModel.build(booster, encoder, {
        "model_name": "churn-risk", "horizon_days": 90, "calibration": CALIBRATION,
        "trained_at": "2026-01-01T00:00:00+00:00", "metrics": {"roc_auc": 0.75}},
        version="7", alias="champion")


@pytest.fixture(scope="module")
def api(model, empty_store, tmp_path_factory):
    with client_for(model, empty_store, tmp_path_factory.mktemp("api"),
                    max_batch_size=MAX_BATCH) as client:
        yield client


@pytest.fixture(scope="module")
def mapped_api(mapped_model_dir, empty_store, tmp_path_factory):
    """The API on a model whose features include ones outside the built-in catalogue."""
    with client_for(load_from_dir(mapped_model_dir), empty_store,
                    tmp_path_factory.mktemp("mapped")) as client:
        yield client


def settled(client: TestClient, timeout: float = 30.0) -> dict:
    """/readyz once the background model load has finished (or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get("/readyz").json()
        if body.get("reason") != LOADING or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_no_model_is_503_on_v1_with_a_public_reason(empty_store, tmp_path):
    with client_for(None, empty_store, tmp_path) as unready:
        assert settled(unready)["reason"] == NOT_FOUND
        r = unready.post("/v1/scores", json={"accounts": [ACCOUNT]})
        assert r.status_code == 503
        assert r.json()["detail"] == NO_MODEL + NOT_FOUND  # no store path, no URL
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert unready.get("/v1/model").status_code == 503
        assert unready.get("/readyz").status_code == 503
        assert unready.get("/healthz").json() == {"status": "ok"}


def test_model_info(api, model):
    info = api.get("/v1/model").json()
    assert (info["name"], info["version"], info["alias"]) == ("churn-risk", "7", "champion")
    assert info["horizon_days"] == 90 and info["trained_at"]
    assert info["metrics"] == {"roc_auc": 0.75} and info["calibrated"] is True
    features = {f["name"]: f for f in info["features"]}
    assert list(features) == model.encoder.feature_names
    assert all(f["description"] for f in features.values())
    assert features["plan"]["dtype"] == "category" and features["plan"]["categories"]
    assert features["active_days_30d"]["categories"] is None
    assert info["scoring"]["max_batch_size"] == MAX_BATCH
    assert info["scoring"]["risk_bands"] == {"high": 0.3, "medium": 0.1, "low": 0.0}
    assert info["treeshap"] == "lightgbm"  # LoadedModel.build without tables: pred_contrib


def test_score_one_account(api, model):
    r = api.post("/v1/scores", json={"accounts": [ACCOUNT]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"]) == ("churn-risk", "7")
    assert body["horizon_days"] == 90
    (score,) = body["scores"]
    assert set(score) == {"account_id", "churn_probability", "risk_band", "health_score",
                          "health_band", "components", "weights", "missing_features",
                          "components_without_data", "health_note", "quadrant", "survey_due",
                          "survey_due_reasons", "raw_score", "reasons", "reasons_rest"}
    assert len(score["reasons"]) == 3 and all(r["text"] for r in score["reasons"])
    assert score["quadrant"] == "Wildcard"  # NPS 6 (detractor), half the CSAT answers satisfied
    assert body["calibrated"] is True
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

    # The route's answer is exactly what the library computes on the same model.
    (expected,) = score_accounts(model, [("A1", ACCOUNT["features"])])
    assert score["churn_probability"] == pytest.approx(expected.churn_probability, abs=1e-12)
    assert score["health_score"] == expected.health_score


def test_reasons_add_up_to_the_models_raw_score(api, model):
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
    from features.scorer import calibrate

    p = float(calibrate(np.array([p]), CALIBRATION)[0])
    assert score["churn_probability"] == pytest.approx(p, abs=1e-12)
    for reason in score["reasons"]:
        raises = reason["contribution"] > 0
        assert reason["direction"] == ("raises_risk" if raises else "lowers_risk")
        assert reason["text"].endswith("raises the churn risk" if raises else
                                       "lowers the churn risk")
    # Every signal once; the active-days signal told by the feature that was sent.
    signals = [x["signal"] for x in score["reasons"]]
    assert len(signals) == len(set(signals))
    days = next(x for x in score["reasons"] if x["signal"] == "active days")
    assert days["feature"] == "active_days_30d"
    assert days["text"].startswith("Days with any product use in the last 30 days: 12 days; ")


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
    r = api.post("/v1/scores", json={"accounts": [{"account_id": "bare",
                                                   "features": {"industry": "retail"}}]})
    assert r.status_code == 200, r.text
    (score,) = r.json()["scores"]
    assert score["components"]["usage"] is None and score["components"]["sentiment"] is None
    assert score["weights"]["risk"] == 1.0 and score["weights"]["usage"] == 0.0
    assert "plan" in score["missing_features"]


def test_an_account_with_no_known_feature_or_an_impossible_value_is_422(api):
    r = api.post("/v1/scores", json={"accounts": [{"account_id": "empty", "features": {}},
                                                  {"account_id": "none"},
                                                  {"account_id": "nulls", "features": {"mrr": None}}]})
    assert r.status_code == 422
    fields = [(e["field"], e["type"]) for e in r.json()["detail"]]
    assert fields == [("accounts[0].features", "no_known_feature"),
                      ("accounts[1].features", "missing"),
                      ("accounts[2].features", "no_known_feature")]
    r = api.post("/v1/scores", json={"accounts": [{"account_id": "A", "features": {
        "last_nps": 1e20, "csat_satisfied_share_180d": 3}}]})
    assert r.status_code == 422
    messages = {e["field"]: e["msg"] for e in r.json()["detail"]}
    assert messages["accounts[0].features.last_nps"].startswith(
        "Feature 'last_nps' must be at most 10")
    assert "at most 1" in messages["accounts[0].features.csat_satisfied_share_180d"]
    columns = api.post("/v1/scores/columns", json={"account_id": ["A", "B"],
                                                   "features": {"mrr": [3.0, None]}})
    assert columns.status_code == 422
    assert [e["field"] for e in columns.json()["detail"]] == ["account_id[1]"]


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
                {"account_id": "C3", "features": {"seats": 4}},
                {"account_id": "D4", "features": {**ACCOUNT["features"], "active_days_30d": 0,
                                                  "csat_nps_quadrant": "Wildcard"}}]
    for query in ("", "?explain=false", "?reasons=2"):
        by_records = api.post(f"/v1/scores{query}", json={"accounts": accounts})
        by_columns = api.post(f"/v1/scores/columns{query}", json=as_columns(accounts))
        assert by_records.status_code == by_columns.status_code == 200, by_columns.text
        assert by_columns.json() == by_records.json()
    # No features at all: nothing to score.
    r = api.post("/v1/scores/columns", json={"account_id": ["X", 7]})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "no_known_feature"


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


