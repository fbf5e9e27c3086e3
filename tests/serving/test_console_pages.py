"""The console's pages and sessions in process (TestClient, the served model swapped in): who gets
in, what the cookie holds, refused cross-site posts, and the pages' numbers coming from the same
functions as the API. The browser side is test_console_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from serving.api.deps import get_model
from serving.app import create_app
from serving.auth import key_digest
from serving.sessions import COOKIE, Sessions
from serving.settings import ServingSettings
from serving.store import ScoreStore
from tests.serving.conftest import local_client
from tests.serving.test_worklist import D1, D2, write_day

KEY = "pages-test-key-0b9e"


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('pages') / 'scores.db'}"
    store = ScoreStore(url)
    write_day(store, D1, prob_index=0)
    write_day(store, D2)
    return url


@contextmanager
def client_for(tiny_model, empty_store, store_url, **settings) -> Iterator[TestClient]:
    app = create_app(ServingSettings(tracking_uri=empty_store, poll_seconds=0,
                                     score_store_url=store_url, **settings))
    app.dependency_overrides[get_model] = lambda: tiny_model
    with TestClient(app, base_url="http://127.0.0.1:8000", follow_redirects=False) as client:
        # The pages read the served model where the lifespan (which found none) puts it.
        app.state.model = tiny_model
        yield client


@pytest.fixture(scope="module")
def locked(tiny_model, empty_store, store_url):
    with client_for(tiny_model, empty_store, store_url,
                    api_key_hashes=[key_digest(KEY)]) as client:
        yield client


def test_without_keys_the_console_is_open(tiny_model, empty_store, store_url):
    with client_for(tiny_model, empty_store, store_url) as client:
        page = client.get("/ui")
        assert page.status_code == 200 and "Log out" not in page.text
        assert "5 accounts scored on 2026-02-01" in page.text
        assert client.get("/ui/login").headers["location"] == "/ui"


def test_pages_need_a_session_and_the_cookie_holds_no_key(locked):
    for path in ("/ui", "/ui/accounts", "/ui/accounts/A"):
        r = locked.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    wrong = locked.post("/ui/login", data={"key": "nope"})
    assert "That key is not valid." in wrong.text and COOKIE not in wrong.cookies
    r = locked.post("/ui/login", data={"key": KEY})
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Max-Age" not in cookie and "expires" not in cookie.lower()  # a browser-session cookie
    assert KEY not in cookie and key_digest(KEY) not in cookie
    page = locked.get("/ui")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    locked.cookies.clear()


def test_a_forged_or_expired_token_is_refused(locked):
    sessions = Sessions(b"another secret")
    locked.cookies.set(COOKIE, sessions.issue(), path="/ui")
    assert locked.get("/ui").status_code == 303
    locked.cookies.clear()
    locked.post("/ui/login", data={"key": KEY})
    token = locked.cookies[COOKIE]
    expiry, nonce, signature = token.split(".")
    locked.cookies.clear()
    locked.cookies.set(COOKIE, f"{int(expiry) + 3600}.{nonce}.{signature}", path="/ui")
    assert locked.get("/ui").status_code == 303  # a changed expiry breaks the signature
    assert not Sessions(b"k").valid(Sessions(b"k", max_age_s=-1).issue())
    locked.cookies.clear()


def test_cross_site_posts_are_refused(locked):
    r = locked.post("/ui/login", data={"key": KEY}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and COOKIE not in r.cookies
    locked.post("/ui/login", data={"key": KEY})
    stale = locked.post("/ui/logout", data={"csrf": "guess"})
    assert stale.status_code == 403
    assert locked.get("/ui").status_code == 200  # still logged in
    page = locked.get("/ui").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = locked.post("/ui/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert f'{COOKIE}=""' in out.headers["set-cookie"]
    locked.cookies.clear()


def test_pages_show_what_the_api_answers(locked):
    locked.post("/ui/login", data={"key": KEY})
    headers = {"X-API-Key": KEY}
    summary = locked.get("/v1/portfolio", headers=headers).json()
    page = locked.get("/ui").text
    assert f'id="revenue-at-risk">{summary["revenue_at_risk"]:,.0f}<' in page
    listed = locked.get("/v1/accounts", params={"owner": "Ana"}, headers=headers).json()
    worklist = locked.get("/ui/accounts", params={"owner": "Ana"}).text
    positions = [worklist.index(f'/ui/accounts/{a["account_id"]}"')
                 for a in listed["accounts"]]
    assert positions == sorted(positions) and len(positions) == 2
    assert "/ui/accounts/B" not in worklist
    account = locked.get("/ui/accounts/A").text
    assert "Days ..." in account and 'id="history-chart"' in account
    assert locked.get("/ui/accounts/nobody").status_code == 404
    # A cursor of another sort starts the list again rather than failing.
    cursor = locked.get("/v1/accounts", params={"limit": 1}, headers=headers).json()
    r = locked.get("/ui/accounts", params={"sort": "health", "cursor": cursor["next_cursor"]})
    assert r.status_code == 303 and "cursor" not in r.headers["location"]
    locked.cookies.clear()


def test_static_files_are_only_the_style_sheet(locked):
    assert locked.get("/ui/static/console.css").status_code == 200
    assert locked.get("/ui/static/..%2Fapp.py").status_code == 404
    assert locked.get("/ui/static/base.html").status_code == 404


def test_without_a_model_the_pages_say_so(empty_store, store_url):
    app = create_app(ServingSettings(tracking_uri=empty_store, poll_seconds=0,
                                     score_store_url=store_url))
    with local_client(app) as client:
        page = client.get("/ui/accounts")
        assert page.status_code == 503 and "<h1>No model is loaded</h1>" in page.text
        assert "none is loaded yet" in page.text and "sqlite" not in page.text
