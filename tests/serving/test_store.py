"""The score store on SQLite and on the real PostgreSQL server, and `churn score`."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
import sqlalchemy as sa

from features.surveys import quadrant_alarms
from serving.scoring import AccountScore
from serving.store import ScoreStore

POSTGRES_URL = os.environ.get("CHURN_TEST_POSTGRES_URL")


def make_score(account_id: str, p: float = 0.2, quadrant: str | None = "Advocate",
               due: bool = False, band: str = "low") -> AccountScore:
    return AccountScore(
        account_id=account_id, churn_probability=p, risk_band=band, health_score=100 * (1 - p),
        health_band="green", components={"usage": 50.0, "engagement": None, "sentiment": 70.0,
                                         "risk": 100 * (1 - p)},
        weights={"usage": 0.4, "engagement": 0.0, "sentiment": 0.2, "risk": 0.4},
        missing_features=["mrr"], components_without_data=["engagement"], raw_score=-1.0,
        reasons=[{"feature": "active_days_30d", "value": 3.0, "text": "Days ...: 3 days",
                  "direction": "raises_risk", "size": "strong", "contribution": 0.8}],
        reasons_rest=-1.8, health_note="No data for engagement", quadrant=quadrant,
        survey_due_reasons=["nps_survey_due"] if due else [])


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield ScoreStore(f"sqlite:///{tmp_path / 'scores.db'}")
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL score-store test needs CHURN_TEST_POSTGRES_URL "
                    "(.ci/run sets postgresql://postgres@127.0.0.1:5432/test)")
    table = f"churn_scores_test_{uuid.uuid4().hex[:10]}"
    s = ScoreStore(POSTGRES_URL, table=table)
    try:
        yield s
    finally:
        s.metadata.drop_all(s.engine)
        s.engine.dispose()


D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 2, 1)


def test_rows_are_never_overwritten(store):
    first = store.write([make_score("A", 0.2), make_score("B", 0.5)], as_of=D1,
                        model_name="churn-risk", model_version="1", horizon_days=90)
    assert (first.written, first.kept) == (2, 0)
    again = store.write([make_score("A", 0.9), make_score("C", 0.1)], as_of=D1,
                        model_name="churn-risk", model_version="1")
    assert (again.written, again.kept) == (1, 1)
    (row,) = store.account("A", "churn-risk")
    assert row["churn_probability"] == 0.2  # the first answer stands
    assert row["reasons"][0]["feature"] == "active_days_30d"
    assert row["components"]["engagement"] is None and row["survey_due"] is False
    # A new model version or a new date adds rows next to the old ones.
    store.write([make_score("A", 0.7)], as_of=D1, model_name="churn-risk", model_version="2")
    store.write([make_score("A", 0.3)], as_of=D2, model_name="churn-risk", model_version="2")
    history = store.account("A", "churn-risk")
    assert [(r["as_of"], r["model_version"], r["churn_probability"]) for r in history] == [
        (D2, "2", 0.3), (D1, "2", 0.7), (D1, "1", 0.2)]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.table)).scalar() == 5


def test_a_clash_writes_nothing(store):
    from serving.store import StoreError

    with pytest.raises(StoreError, match="clash"):
        store.write([make_score("A"), make_score("A", 0.9)], as_of=D1, model_name="churn-risk",
                    model_version="1")
    assert store.account("A", "churn-risk") == []


def test_portfolio_and_alarms(store):
    assert store.portfolio("churn-risk") is None
    scores = ([make_score(f"C{i}", 0.6, "Churner", due=True, band="high") for i in range(6)]
              + [make_score(f"W{i}", 0.2, "Wildcard") for i in range(80)]
              + [make_score(f"A{i}", 0.05, "Advocate", due=i < 3) for i in range(14)]
              + [make_score(f"N{i}", 0.1, None) for i in range(4)])
    store.write(scores, as_of=D1, model_name="churn-risk", model_version="1")
    p = store.portfolio("churn-risk")
    assert p["as_of"] == D1 and p["accounts"] == 104 and p["model_version"] == "1"
    assert p["quadrants"] == {"Churner": 6, "Wildcard": 80, "Advocate": 14, "none": 4}
    assert p["risk_bands"] == {"high": 6, "low": 98} and p["survey_due"] == 9
    fired = {a["quadrant"]: a["firing"] for a in quadrant_alarms(p["quadrants"], p["accounts"])}
    assert fired == {"Churner": True, "Wildcard": False}  # 6 % > 5 %; exactly 80 % is not above
    # A later date with one Wildcard more and fewer Churners: the latest date is the portfolio.
    later = ([make_score(f"C{i}", 0.6, "Churner") for i in range(5)]
             + [make_score(f"W{i}", 0.2, "Wildcard") for i in range(81)]
             + [make_score(f"A{i}", 0.05, "Advocate") for i in range(14)])
    store.write(later, as_of=D2, model_name="churn-risk", model_version="1")
    p = store.portfolio("churn-risk")
    fired = {a["quadrant"]: a["firing"] for a in quadrant_alarms(p["quadrants"], p["accounts"])}
    assert fired == {"Churner": False, "Wildcard": True}
    assert store.portfolio("churn-risk", D1)["accounts"] == 104
    assert store.portfolio("churn-risk", dt.date(2020, 1, 1)) is None


def test_each_models_scores_stay_apart(store):
    """Two data sets' models in one store: a portfolio and a history are one model's."""
    store.write([make_score("A", 0.2), make_score("B", 0.3)], as_of=D1, model_name="churn-risk",
                model_version="1")
    store.write([make_score("A", 0.9)], as_of=D2, model_name="sim-dev", model_version="4")
    assert store.portfolio("churn-risk")["as_of"] == D1
    assert store.portfolio("churn-risk")["accounts"] == 2
    assert (store.portfolio("sim-dev")["as_of"], store.portfolio("sim-dev")["accounts"]) == (D2, 1)
    assert [r["churn_probability"] for r in store.account("A", "churn-risk")] == [0.2]
    assert [r["churn_probability"] for r in store.account("A", "sim-dev")] == [0.9]
    assert store.portfolio("ravenstack-saas") is None


def test_churn_score_cli_writes_history(registered_model, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    url = f"sqlite:///{tmp_path / 'scores.db'}"
    args = ["score", "--data", str(registered_model.data_dir), "--tracking-uri",
            registered_model.tracking_uri, "--store-url", url,
            "--model-uri", f"models:/{registered_model.model_name}/{registered_model.version}"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    store = ScoreStore(url)
    portfolio = store.portfolio("churn-risk")
    n = portfolio["accounts"]
    assert n > 100 and portfolio["model_version"] == str(registered_model.version)
    assert sum(portfolio["risk_bands"].values()) == n
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "stored 0 scores" in second.output and f"{n:,} were already stored" in second.output
    some = store.portfolio("churn-risk")
    assert some["accounts"] == n
    with store.engine.connect() as conn:
        account = conn.execute(sa.select(store.table.c.account_id).limit(1)).scalar()
    (row,) = store.account(account, registered_model.model_name)
    assert len(row["reasons"]) == 3 and row["reasons"][0]["text"]
    # What the console shows beside the score, from the same data.
    from features.synthetic import OWNERS

    assert row["owner"] in {name for team in OWNERS for name in team}
    assert row["mrr"] > 0 and row["renewal_date"] >= row["as_of"]
    assert row["revenue_at_risk"] == pytest.approx(12 * row["mrr"] * row["churn_probability"])
    assert set(row["recency"]) >= {"days_since_last_survey", "days_since_last_proactive"}
    assert portfolio["revenue_at_risk"] == pytest.approx(
        sum(portfolio["revenue_at_risk_by_band"].values()))
