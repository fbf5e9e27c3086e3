"""``GET /v1/accounts`` (the worklist) and the store columns it rests on, in process: the real app
(TestClient) over a real SQLite score store written by ScoreStore.write, the served model swapped
in through ``app.dependency_overrides``."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from serving.api.deps import get_model
from serving.app import create_app
from serving.settings import ServingSettings
from serving.store import CONSOLE_COLUMNS, AccountContext, ScoreStore
from tests.serving.conftest import local_client
from tests.serving.test_store import POSTGRES_URL, make_score

D1, D2, D3 = dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)
#: account: (probability on D1 or None, probability on D2, band on D2, mrr, owner, days to
#: renewal from D2, quadrant, survey due)
ACCOUNTS = {
    "A": (0.10, 0.60, "high", 1000.0, "Ana", 20, "Churner", True),
    "B": (0.50, 0.30, "medium", 5000.0, "Ben", 200, "Advocate", False),
    "C": (0.30, 0.305, "medium", 200.0, "Ana", 45, "Wildcard", False),
    "D": (None, 0.90, "high", 100.0, "Ben", 10, None, True),
    "E": (0.20, 0.05, "low", None, None, None, "Advocate", False),
}


def write_day(store: ScoreStore, day: dt.date, version: str = "7", prob_index: int = 1) -> None:
    scores, context = [], {}
    for account, (p1, p2, band, mrr, owner, days, quadrant, due) in ACCOUNTS.items():
        p = (p1, p2)[prob_index]
        if p is None:
            continue
        scores.append(make_score(account, p, quadrant=quadrant, due=due, band=band))
        context[account] = AccountContext(
            mrr=mrr, owner=owner, renewal_date=None if days is None else day + dt.timedelta(days),
            recency={"days_since_last_survey": 12.0})
    store.write(scores, as_of=day, model_name="churn-risk", model_version=version,
                horizon_days=90, context=context)


@pytest.fixture(scope="module")
def setup(tiny_model, empty_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("worklist") / "scores.db"
    store = ScoreStore(f"sqlite:///{path}")
    write_day(store, D1, prob_index=0)
    write_day(store, D2, prob_index=1)
    app = create_app(ServingSettings(tracking_uri=empty_store, poll_seconds=0,
                                     score_store_url=f"sqlite:///{path}"))
    app.dependency_overrides[get_model] = lambda: tiny_model
    with local_client(app) as client:
        yield client, store


def ids(page: dict) -> list[str]:
    return [a["account_id"] for a in page["accounts"]]


def test_default_order_is_revenue_at_risk_as_documented(setup):
    client, _ = setup
    page = client.get("/v1/accounts").json()
    assert page["as_of"] == D2.isoformat() and page["model_version"] == "7"
    assert page["total"] == 5
    for row in page["accounts"]:
        _, p2, _, mrr, *_ = ACCOUNTS[row["account_id"]]
        assert row["churn_probability"] == pytest.approx(p2)
        if mrr is None:
            assert row["revenue_at_risk"] is None and row["mrr"] is None
        else:  # annualised mrr x churn probability within the horizon
            assert row["revenue_at_risk"] == pytest.approx(12 * mrr * p2)
    # B 18,000 > A 7,200 > D 1,080 > C 732; E has no mrr: last.
    assert ids(page) == ["B", "A", "D", "C", "E"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["WorklistAccount"]
    assert "12 x mrr" in schema["properties"]["revenue_at_risk"]["description"]


def test_other_orders(setup):
    client, _ = setup
    by_p = client.get("/v1/accounts", params={"sort": "churn_probability"}).json()
    assert ids(by_p) == ["D", "A", "C", "B", "E"]
    by_health = client.get("/v1/accounts", params={"sort": "health"}).json()
    assert ids(by_health) == ["D", "A", "C", "B", "E"]  # least healthy (health = 100(1-p)) first
    by_change = client.get("/v1/accounts", params={"sort": "risk_change"}).json()
    # A +0.50, C +0.005, E -0.15, B -0.20; D has no earlier score: last.
    assert ids(by_change) == ["A", "C", "E", "B", "D"]
    assert client.get("/v1/accounts", params={"sort": "mrr"}).status_code == 422


def test_change_since_previous_score(setup):
    client, _ = setup
    rows = {r["account_id"]: r for r in client.get("/v1/accounts").json()["accounts"]}
    assert rows["A"]["previous_churn_probability"] == pytest.approx(0.10)
    assert rows["A"]["risk_change"] == pytest.approx(0.50) and rows["A"]["trend"] == "rising"
    assert rows["B"]["risk_change"] == pytest.approx(-0.20) and rows["B"]["trend"] == "falling"
    assert rows["C"]["trend"] == "steady"  # +0.5 point: less than 1 point
    assert rows["D"]["previous_churn_probability"] is None and rows["D"]["trend"] is None
    assert rows["A"]["days_to_renewal"] == 20 and rows["A"]["owner"] == "Ana"
    assert rows["A"]["top_reason"].startswith("Days")


@pytest.mark.parametrize(("params", "expected"), [
    ({"risk_band": "high"}, ["A", "D"]),
    ({"quadrant": "Advocate"}, ["B", "E"]),
    ({"survey_due": "true"}, ["A", "D"]),
    ({"survey_due": "false"}, ["B", "C", "E"]),
    ({"renewal_within_days": 30}, ["A", "D"]),
    ({"owner": "Ana"}, ["A", "C"]),
    ({"owner": "Ana", "renewal_within_days": 30}, ["A"]),
    ({"owner": "Nobody"}, []),
])
def test_filters(setup, params, expected):
    client, _ = setup
    page = client.get("/v1/accounts", params=params).json()
    assert sorted(ids(page)) == expected and page["total"] == len(expected)


def test_cursor_pages_through_a_fixed_snapshot(setup, tmp_path):
    client, store = setup
    full = ids(client.get("/v1/accounts", params={"sort": "risk_change"}).json())
    first = client.get("/v1/accounts", params={"sort": "risk_change", "limit": 2}).json()
    assert ids(first) == full[:2] and first["next_cursor"]
    seen, cursor = ids(first), first["next_cursor"]
    while cursor:
        page = client.get("/v1/accounts", params={"sort": "risk_change", "limit": 2,
                                                  "cursor": cursor}).json()
        seen += ids(page)
        cursor = page["next_cursor"]
    assert seen == full
    bad = client.get("/v1/accounts", params={"sort": "health", "cursor": first["next_cursor"]})
    assert bad.status_code == 400 and "sort=risk_change" in bad.json()["detail"]
    assert client.get("/v1/accounts", params={"cursor": "not-a-cursor"}).status_code == 400


def test_a_cursor_survives_a_newer_scoring(tiny_model, empty_store, tmp_path):
    store = ScoreStore(f"sqlite:///{tmp_path / 'scores.db'}")
    write_day(store, D2)
    app = create_app(ServingSettings(tracking_uri=empty_store, poll_seconds=0,
                                     score_store_url=store.url))
    app.dependency_overrides[get_model] = lambda: tiny_model
    with local_client(app) as client:
        assert client.get("/v1/accounts", params={"limit": 1}).status_code == 200
        first = client.get("/v1/accounts", params={"limit": 3}).json()
        write_day(store, D3, version="8")  # a new date by a new version, mid-paging
        rest = client.get("/v1/accounts", params={"limit": 3, "cursor": first["next_cursor"]})
        assert rest.json()["as_of"] == D2.isoformat()
        assert ids(first) + ids(rest.json()) == ["B", "A", "D", "C", "E"]
        assert client.get("/v1/accounts").json()["as_of"] == D3.isoformat()


def test_portfolio_revenue_at_risk(setup):
    client, _ = setup
    summary = client.get("/v1/portfolio").json()
    expected = {"high": 12 * (1000 * 0.6 + 100 * 0.9), "medium": 12 * (5000 * 0.3 + 200 * 0.305),
                "low": 0.0}
    assert summary["revenue_at_risk_by_band"] == pytest.approx(expected)
    assert summary["revenue_at_risk"] == pytest.approx(sum(expected.values()))


def test_no_store_yet_says_to_run_churn_score(tiny_model, empty_store, tmp_path):
    app = create_app(ServingSettings(tracking_uri=empty_store, poll_seconds=0,
                                     score_store_url=f"sqlite:///{tmp_path / 's.db'}"))
    app.dependency_overrides[get_model] = lambda: tiny_model
    with local_client(app) as client:
        r = client.get("/v1/accounts")
        assert r.status_code == 503 and "churn score" in r.json()["detail"]
        assert str(tmp_path) not in r.text and "sqlite" not in r.text  # no path, no driver
    assert not (tmp_path / "s.db").exists()  # the server reads the store; it never creates it


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A score store URL and table name (a table of its own on the shared PostgreSQL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}", "churn_scores"
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL score-store test needs CHURN_TEST_POSTGRES_URL")
    table = f"wt21_old_scores_{uuid.uuid4().hex[:10]}"
    yield POSTGRES_URL, table
    store = ScoreStore(POSTGRES_URL, table=table)
    store.metadata.drop_all(store.engine)
    store.engine.dispose()


def test_a_store_written_before_the_console_columns(store_url):
    """Read as it is (console values None), and upgraded by the next write."""
    url, name = store_url
    old = ScoreStore(url, table=name)
    old_table = sa.Table(name, sa.MetaData(),
                         *[sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                           for c in old.table.c if c.name not in CONSOLE_COLUMNS])
    old_table.create(old.engine)
    with old.engine.begin() as conn:
        conn.execute(sa.insert(old_table), [{
            "account_id": "A", "as_of": D1, "model_name": "churn-risk", "model_version": "1",
            "scored_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "churn_probability": 0.4,
            "risk_band": "high", "survey_due": False, "survey_due_reasons": [],
            "components": {}, "weights": {}, "missing_features": []}])
    store = ScoreStore(url, table=name)
    (row,) = store.account("A", "churn-risk")
    assert row["churn_probability"] == 0.4 and row["owner"] is None and row["mrr"] is None
    assert store.portfolio("churn-risk")["revenue_at_risk"] is None
    write_day(store, D2)
    assert {c["name"] for c in sa.inspect(store.engine).get_columns(name)} >= {
        "mrr", "owner", "renewal_date", "revenue_at_risk", "recency"}
    assert store.account("B", "churn-risk")[0]["revenue_at_risk"] == pytest.approx(12 * 5000 * 0.3)
    assert store.account("A", "churn-risk")[1]["owner"] is None


def test_account_contexts_from_the_scoring_rows():
    import pandas as pd

    from serving.batch import account_contexts

    frame = pd.DataFrame({"account_id": ["A", "B"], "as_of": [D1, D1], "mrr": [120.0, None],
                          "days_to_renewal": [30.0, None], "owner": ["Ana", None],
                          "days_since_last_survey": [None, None],
                          "days_since_last_event": [3.0, None]})
    contexts = account_contexts(frame, D1, not_applicable={"days_since_last_survey"})
    assert contexts["A"] == AccountContext(mrr=120.0, renewal_date=D1 + dt.timedelta(30),
                                           owner="Ana", recency={"days_since_last_event": 3.0})
    # Without surveys in the model's data there is no survey recency, rather than "never".
    assert contexts["B"] == AccountContext(recency={"days_since_last_event": None})


def test_the_worklist_on_sqlite_and_postgresql(store_url):
    from serving.worklist import Filters, worklist

    url, name = store_url
    store = ScoreStore(url, table=name)
    write_day(store, D1, prob_index=0)
    write_day(store, D2)
    first = worklist(store, "churn-risk", sort="risk_change", filters=Filters(owner="Ana"),
                     limit=1)
    assert [a["account_id"] for a in first["accounts"]] == ["A"] and first["total"] == 2
    assert first["accounts"][0]["risk_change"] == pytest.approx(0.5)
    rest = worklist(store, "churn-risk", sort="risk_change", filters=Filters(owner="Ana"),
                    limit=1, cursor=first["next_cursor"])
    assert [a["account_id"] for a in rest["accounts"]] == ["C"] and rest["next_cursor"] is None
    soon = worklist(store, "churn-risk", filters=Filters(renewal_within_days=30, survey_due=True))
    assert [a["account_id"] for a in soon["accounts"]] == ["A", "D"]
    assert soon["accounts"][0]["days_to_renewal"] == 20
