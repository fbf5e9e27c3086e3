"""The CS console in a real browser: Playwright driving Debian's chromium against a real uvicorn
server with API keys, on scores ``score_data`` stored at two dates with the registered model.

One server and one browser for the module; every request the pages make is intercepted, and any
that would leave 127.0.0.1 fails the test, as does any console error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from serving.auth import key_digest
from tests.servers import Server, start_server, uvicorn_factory_argv

CHROMIUM = Path("/usr/bin/chromium")
KEY = "console-test-key-5b1f0c2e9d"
DATES = ["2024-09-01", "2024-10-01"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="the browser tests need Debian's chromium at /usr/bin/chromium "
    "(apt-get install -y chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def console(registered_model, small_tables, tmp_path_factory) -> Iterator[Server]:
    """A server with one API key over a score store holding two dates of scores."""
    from serving.batch import score_data
    from serving.settings import ServingSettings

    root = tmp_path_factory.mktemp("console")
    store = f"sqlite:///{root / 'scores.db'}"
    model_uri = f"models:/{registered_model.model_name}/{registered_model.version}"
    score_data(small_tables, ServingSettings(tracking_uri=registered_model.tracking_uri,
                                             model_uri=model_uri, score_store_url=store),
               dates=DATES)
    env = {"CHURN_TRACKING_URI": registered_model.tracking_uri, "CHURN_MODEL_URI": model_uri,
           "CHURN_SCORE_STORE_URL": store, "CHURN_POLL_SECONDS": "0",
           "CHURN_API_KEY_HASHES": f'["{key_digest(KEY)}"]', "CHURN_LOG_LEVEL": "INFO"}
    with start_server(uvicorn_factory_argv, env, root, ready=True) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@dataclass
class Watch:
    """What a page did: console errors, and requests that would have left 127.0.0.1."""

    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser, console):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watch = Watch()

    def route(r):
        watch.urls.append(r.request.url)
        if urlsplit(r.request.url).hostname != "127.0.0.1":
            watch.outside.append(r.request.url)
            return r.abort()
        return r.continue_()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and watch.errors.append(m.text))
    page.on("pageerror", lambda e: watch.errors.append(str(e)))
    page.watch = watch
    yield page
    assert watch.errors == [], f"console errors: {watch.errors}"
    assert watch.outside == [], f"requests leaving 127.0.0.1: {watch.outside}"
    assert not any(KEY in u for u in watch.urls), "the key appeared in a URL"
    context.close()


def api(console: Server, path: str, **params) -> dict:
    r = httpx.get(console.url + path, params=params, headers={"X-API-Key": KEY}, timeout=10)
    r.raise_for_status()
    return r.json()


def log_in(page, console: Server) -> None:
    page.goto(console.url + "/ui")
    assert page.url == console.url + "/ui/login"
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(console.url + "/ui")


def money(text: str) -> float:
    return float(text.replace(",", ""))


def test_login_portfolio_and_logout(page, console):
    page.goto(console.url + "/ui/accounts")
    assert page.url == console.url + "/ui/login"  # every page needs a session
    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "That key is not valid."
    log_in(page, console)
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1
    assert KEY not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # not readable by scripts
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0

    summary = api(console, "/v1/portfolio")
    assert summary["as_of"] == DATES[-1]
    assert money(page.locator("#revenue-at-risk").inner_text()) == pytest.approx(
        summary["revenue_at_risk"], abs=0.5)
    assert page.locator("#surveys-due").inner_text() == str(summary["survey_due"])
    alarms = page.locator(".alarms li")
    assert alarms.count() == len(summary["alarms"]) == 2
    for alarm in summary["alarms"]:
        state = "Alarm" if alarm["firing"] else "OK"
        assert page.get_by_text(f"{state}: {alarm['quadrant']}s").count() == 1

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(console.url + "/ui/login")
    assert page.context.cookies() == []
    page.goto(console.url + "/ui")
    assert page.url == console.url + "/ui/login"


def rows(page) -> list[dict[str, str]]:
    return page.evaluate("""() => [...document.querySelectorAll('table.worklist tbody tr')]
        .map(tr => ({id: tr.querySelector('th a').textContent,
                     cells: [...tr.querySelectorAll('td')].map(td => td.textContent.trim())}))""")


def test_worklist_sorts_and_filters(page, console):
    log_in(page, console)
    page.get_by_role("link", name="Worklist").click()
    page.wait_for_url(re.compile(r".*/ui/accounts$"))
    listed = api(console, "/v1/accounts", limit=50)
    assert [r["id"] for r in rows(page)] == [a["account_id"] for a in listed["accounts"]]
    unlabelled = page.evaluate("""() => [...document.querySelectorAll(
        'select, input:not([type=hidden]), button')].filter(e => !(e.labels && e.labels.length)
        && !e.textContent.trim()).map(e => e.outerHTML)""")
    assert unlabelled == []  # every control says what it is

    page.get_by_role("link", name="Churn prob.").click()
    page.wait_for_url(re.compile(r"sort=churn_probability"))
    by_p = api(console, "/v1/accounts", sort="churn_probability", limit=50)
    assert [r["id"] for r in rows(page)] == [a["account_id"] for a in by_p["accounts"]]

    owner = page.locator("#f-owner option").nth(1).inner_text()
    page.get_by_label("Owner").select_option(owner)
    page.get_by_label("Risk band").select_option("low")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"owner="))
    mine = api(console, "/v1/accounts", sort="churn_probability", owner=owner,
               risk_band="low", limit=50)
    assert 0 < mine["total"] < listed["total"]
    shown = rows(page)
    assert [r["id"] for r in shown] == [a["account_id"] for a in mine["accounts"]]
    assert all(r["cells"][6] == owner for r in shown)
    assert page.locator("#worklist-count").inner_text().startswith(f"{mine['total']} accounts")


def test_account_page_chart_and_reasons(page, console):
    log_in(page, console)
    page.goto(console.url + "/ui/accounts?sort=risk_change")
    first = rows(page)[0]["id"]
    page.get_by_role("link", name=first, exact=True).click()
    page.wait_for_url(console.url + f"/ui/accounts/{first}")
    stored = api(console, f"/v1/accounts/{first}")
    assert page.get_by_role("heading", level=1).inner_text() == f"Account {first}"
    chart = page.locator("#history-chart")
    assert chart.is_visible()
    assert chart.locator("circle.risk").count() == len(DATES)  # one point per scoring date
    assert chart.locator("polyline.risk").count() == 1
    reasons = page.locator("ol.reasons li").all_inner_texts()
    assert reasons == [r["text"] for r in stored["latest"]["reasons"]]
    assert page.locator("#churn-probability").inner_text() == (
        f"{stored['latest']['churn_probability']:.0%}")
    assert page.get_by_role("heading", name="Health components").is_visible()
    assert page.get_by_text("Days since the account was last sent a survey").is_visible()


def test_readable_on_a_phone(page, console):
    log_in(page, console)
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/ui", "/ui/accounts", "/ui/accounts/" + api(
            console, "/v1/accounts", limit=1)["accounts"][0]["account_id"]):
        page.goto(console.url + path)
        # Nothing wider than the screen but the worklist's own scrolling box.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        # No inline style or script: the pages work under a strict Content-Security-Policy.
        assert page.evaluate("document.querySelectorAll('[style], script').length") == 0, path


def test_the_key_is_not_logged(console):
    """Runs last: the log holds the logins above (POST /ui/login), never the key."""
    log = console.output()
    assert '"route": "/ui/login"' in log and '"method": "POST"' in log
    assert KEY not in log
