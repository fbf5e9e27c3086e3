"""Hardening, in process: what an attacker or an unlucky operator can make the app answer.

Secrets and internals never reach a client, bad model files are refused without taking the
process down, the exposure rule and the Host allow-list hold however the app is started, the
store is read-only and its state reported, and bad requests are refused at the boundary. Real
uvicorn servers (connection limits, start-up, workers) are in ``test_hardening_server.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from features.digests import digest_tags
from serving.api.deps import NO_MODEL, NO_STORE, get_model, get_store
from serving.app import create_app
from serving.lifecycle import check_for_new_model, set_model
from serving.loader import load_model
from serving.model import TAMPERED, UNREACHABLE, UNREADABLE, ModelLoadError, load_from_dir
from serving.settings import ServingSettings
from serving.store import ScoreStore
from tests.servers import free_port
from tests.serving.conftest import LOCAL_CLIENT, register_model_dir, wait_for_model, write_model_dir
from tests.serving.test_routes import ACCOUNT
from tests.serving.test_store import POSTGRES_URL, make_score

SECRET = "s3cretpw"
STORE_SECRET = "p/a@ss"
QUERY_SECRET = "zz9secret"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def app_client(tmp_path: Path, model=None, **settings: object) -> TestClient:
    settings.setdefault("tracking_uri", f"sqlite:///{tmp_path / 'none.db'}")
    settings.setdefault("score_store_url", f"sqlite:///{tmp_path / 'scores.db'}")
    app = create_app(ServingSettings(poll_seconds=0, **settings))
    if model is not None:
        app.dependency_overrides[get_model] = lambda: model
    return TestClient(app, base_url="http://localhost", client=LOCAL_CLIENT)


def truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


# --- 1. secrets never leave the process ------------------------------------------------------

def test_answers_carry_a_public_reason_and_the_request_id_never_a_secret_or_address(
        tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the registry is down: fail fast
    registry_port, store_port = free_port(), free_port()  # nothing listens on either
    tracking = f"http://admin:{SECRET}@127.0.0.1:{registry_port}"
    store = (f"postgresql://app:{STORE_SECRET}@127.0.0.1:{store_port}/scores"
             f"?password={QUERY_SECRET}")
    lines = Lines()
    logging.getLogger("churn").addHandler(lines)
    try:
        with app_client(tmp_path, tracking_uri=tracking, score_store_url=store,
                        model_uri="models:/churn-risk@champion", load_attempts=1) as client:
            ready = wait_for_model(client)
            assert ready["reason"] == UNREACHABLE and ready["store"] == "unavailable"
            answers = [client.get("/readyz"),
                       client.post("/v1/scores", json={"accounts": [ACCOUNT]}),
                       client.get("/v1/model"), client.get("/v1/portfolio"),
                       client.get("/v1/accounts/A1")]
            # the store's failure, with a model: swap one in to reach the store
            client.app.dependency_overrides[get_model] = lambda: tiny_model
            answers += [client.get("/v1/portfolio"), client.get("/v1/accounts/A1")]
    finally:
        logging.getLogger("churn").removeHandler(lines)
    assert [r.status_code for r in answers] == [503] * len(answers)
    assert answers[1].json()["detail"] == NO_MODEL + UNREACHABLE
    assert answers[-1].json()["detail"] == NO_STORE
    for r in answers:
        text = r.text
        for leak in (SECRET, STORE_SECRET, QUERY_SECRET, "127.0.0.1", str(registry_port),
                     str(store_port), "://", "sqlalchemy", "psycopg", "Traceback"):
            assert leak not in text, (leak, text)
        if r.request.url.path != "/readyz":
            assert r.json()["request_id"] == r.headers["x-request-id"]
    log = "\n".join(lines.lines)
    assert str(registry_port) in log and str(store_port) in log  # the detail is logged ...
    for secret in (SECRET, STORE_SECRET, QUERY_SECRET):
        assert secret not in log  # ... redacted


# --- 2. a bad model artifact never takes the server down -------------------------------------

def test_a_booster_cut_in_half_is_a_load_error_not_a_crash(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "cut"
    (model_dir / "artifacts").mkdir(parents=True)
    for name in ("booster.txt", "metadata.json"):
        (model_dir / "artifacts" / name).write_bytes(
            (tiny_model_dir / "artifacts" / name).read_bytes())
    truncate(model_dir / "artifacts" / "booster.txt")  # LightGBM's parser calls terminate()
    with pytest.raises(ModelLoadError, match="LightGBM cannot parse") as info:
        load_from_dir(model_dir)
    assert info.value.public == UNREADABLE


def _leaf_edit(path: Path) -> None:
    """Change one digit of the first leaf value: the model still parses, and scores wrong."""
    text = path.read_text()
    match = re.search(r"^leaf_value=-?(\d)", text, re.MULTILINE)
    assert match
    digit = "9" if match.group(1) != "9" else "8"
    path.write_text(text[:match.start(1)] + digit + text[match.end(1):])


@pytest.fixture(scope="module")
def tagged_registry(tiny_booster, tmp_path_factory):
    """The tiny model registered with the digests `churn train` records, in its own store."""
    booster, encoder = tiny_booster
    root = tmp_path_factory.mktemp("tagged")
    model_dir = write_model_dir(root / "model", booster, encoder)
    registry = register_model_dir(model_dir, root)
    artifacts = model_dir / "artifacts"
    client = MlflowClient(registry.tracking_uri)
    for key, value in digest_tags({p.name: p for p in artifacts.iterdir()}).items():
        client.set_model_version_tag(registry.model_name, registry.version, key, value)
    return registry


def _stored_booster(registry) -> Path:
    client = MlflowClient(registry.tracking_uri)
    location = client.get_model_version_download_uri(registry.model_name, registry.version)
    path = Path(location.removeprefix("file://")) / "artifacts" / "booster.txt"
    assert path.is_file(), path
    return path


def test_an_artifact_edited_after_registration_is_refused(tagged_registry):
    uri = f"models:/{tagged_registry.model_name}@champion"
    assert load_model(uri, tagged_registry.tracking_uri).version == tagged_registry.version
    stored = _stored_booster(tagged_registry)
    original = stored.read_bytes()
    try:
        _leaf_edit(stored)
        with pytest.raises(ModelLoadError, match="does not match the SHA-256") as info:
            load_model(uri, tagged_registry.tracking_uri)
        assert info.value.public == TAMPERED
    finally:
        stored.write_bytes(original)


def test_training_records_the_digests_serving_checks(registered_model):
    """`churn train`'s registration (training.tracking) tags the version with each file's digest."""
    version = MlflowClient(registered_model.tracking_uri).get_model_version(
        registered_model.model_name, registered_model.version)
    assert {"sha256.booster.txt", "sha256.metadata.json"} <= set(version.tags)
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for k, v in version.tags.items()
               if k.startswith("sha256."))


def test_a_cut_new_version_keeps_the_last_good_model(tiny_model_dir, tmp_path):
    registry = register_model_dir(tiny_model_dir, tmp_path)
    uri = f"models:/{registry.model_name}@champion"
    ScoreStore(f"sqlite:///{tmp_path / 'scores.db'}").create()
    with app_client(tmp_path, tracking_uri=registry.tracking_uri, model_uri=uri) as client:
        assert wait_for_model(client)["model_version"] == registry.version
        app = client.app
        cut = tmp_path / "cut"
        (cut / "artifacts").mkdir(parents=True)
        for name in ("booster.txt", "metadata.json"):
            (cut / "artifacts" / name).write_bytes((tiny_model_dir / "artifacts" / name).read_bytes())
        truncate(cut / "artifacts" / "booster.txt")
        bad = register_model_dir(cut, tmp_path)
        assert check_for_new_model(app, app.state.settings) == "load_error"
        assert app.state.model.version == registry.version
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded"
        assert ready["reason"] == (f"serving the last good model: version {bad.version} could "
                                   f"not be served: {UNREADABLE}")
        assert client.post("/v1/scores", json={"accounts": [ACCOUNT]}).status_code == 200


# --- 4. one exposure rule, however the app is started ----------------------------------------

def test_v1_without_keys_answers_this_machine_only(tmp_path, tiny_model):
    with app_client(tmp_path, tiny_model) as local:
        assert local.post("/v1/scores", json={"accounts": [ACCOUNT]}).status_code == 200
    app = create_app(ServingSettings(tracking_uri=f"sqlite:///{tmp_path / 'n.db'}",
                                     poll_seconds=0, host="127.0.0.1",
                                     score_store_url=f"sqlite:///{tmp_path / 's.db'}"))
    app.dependency_overrides[get_model] = lambda: tiny_model
    with TestClient(app, base_url="http://localhost", client=("192.0.2.7", 40000)) as remote:
        r = remote.post("/v1/scores", json={"accounts": [ACCOUNT]})
        assert r.status_code == 403 and "API keys" in r.json()["detail"]
        assert remote.get("/healthz").status_code == 200  # ops routes stay open
    app = create_app(ServingSettings(tracking_uri=f"sqlite:///{tmp_path / 'n.db'}",
                                     poll_seconds=0, allow_anonymous=True,
                                     score_store_url=f"sqlite:///{tmp_path / 's.db'}"))
    app.dependency_overrides[get_model] = lambda: tiny_model
    with TestClient(app, client=("192.0.2.7", 40000)) as asked_for:
        assert asked_for.post("/v1/scores", json={"accounts": [ACCOUNT]}).status_code == 200


# --- 5. Host allow-list, security headers, docs served from the package ----------------------

def test_host_allow_list_refuses_dns_rebinding_on_the_keyless_default(tmp_path, tiny_model):
    with app_client(tmp_path, tiny_model) as client:
        rebound = client.post("/v1/scores", json={"accounts": [ACCOUNT]},
                              headers={"Host": "attacker.example"})
        assert rebound.status_code == 400
        for host in ("localhost", "127.0.0.1:8000"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200
    with app_client(tmp_path, tiny_model, allowed_hosts=["churn.internal"]) as client:
        assert client.get("/healthz", headers={"Host": "churn.internal"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "localhost"}).status_code == 400


def test_security_headers_and_offline_docs(tmp_path, tiny_model):
    with app_client(tmp_path, tiny_model) as client:
        for path in ("/healthz", "/v1/model", "/docs"):
            headers = client.get(path).headers
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["referrer-policy"] == "same-origin"
        page = client.get("/docs").text
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
        assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
        assert "cdn" not in page.lower()
        for asset in assets:
            r = client.get(asset)
            assert r.status_code == 200 and r.content, asset
        assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text


# --- 6. small correctness holes ---------------------------------------------------------------

def test_a_body_not_sent_as_json_is_415(tmp_path, tiny_model):
    import json

    with app_client(tmp_path, tiny_model) as client:
        body = json.dumps({"accounts": [ACCOUNT]})
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            r = client.post("/v1/scores", content=body, headers=headers)
            assert r.status_code == 415, (content_type, r.text)
        ok = client.post("/v1/scores", content=body,
                         headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200


def test_a_mistyped_sqlite_store_is_not_created_and_says_so(tmp_path, tiny_model):
    typo = tmp_path / "churn-socres.db"
    with app_client(tmp_path, tiny_model, score_store_url=f"sqlite:///{typo}") as client:
        client.app.state.model = tiny_model
        r = client.get("/v1/portfolio")
        assert r.status_code == 503 and r.json()["detail"] == NO_STORE
        ready = client.get("/readyz").json()
        assert (ready["status"], ready["store"]) == ("degraded", "unavailable")
    assert not typo.exists()


def test_readyz_reports_the_store_state(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    ScoreStore(url).create()
    with app_client(tmp_path, tiny_model, score_store_url=url) as client:
        set_model(client.app, tiny_model)
        assert client.get("/readyz").json()["store"] == "ok"
        assert client.get("/readyz").json()["status"] == "ready"
        (tmp_path / "scores.db").unlink()  # the store goes away under the server
        client.app.state.store.engine.dispose()
        ready = client.get("/readyz").json()
        assert (ready["status"], ready["store"]) == ("degraded", "unavailable")


@pytest.fixture
def postgres_store():
    if not POSTGRES_URL:
        pytest.skip("needs CHURN_TEST_POSTGRES_URL")
    table = f"hard19_{uuid.uuid4().hex[:10]}"
    writer = ScoreStore(POSTGRES_URL, table=table)
    writer.write([make_score("A1")], as_of=dt.date(2026, 1, 1), model_name="churn-risk",
                 model_version="1")
    try:
        yield ScoreStore(POSTGRES_URL, table=table, read_only=True)
    finally:
        writer.metadata.drop_all(writer.engine)
        writer.engine.dispose()


def test_account_ids_are_validated_at_the_boundary(tmp_path, tiny_model, postgres_store):
    with app_client(tmp_path, tiny_model) as client:
        client.app.dependency_overrides[get_store] = lambda: postgres_store
        assert client.get("/v1/accounts/A1").status_code == 200
        for bad in ("A%00B", "A%1FB", "A" * 257):
            r = client.get(f"/v1/accounts/{bad}")
            assert r.status_code == 422, (bad, r.text)
            assert "SELECT" not in r.text and "churn_scores" not in r.text
        nul = {"accounts": [{**ACCOUNT, "account_id": "A\x00B"}]}
        assert client.post("/v1/scores", json=nul).status_code == 422
