"""One rule, one place: every caller of a business rule gets the same answer.

The probability a model gives (the scoring API, ``churn evaluate``, the MLflow pyfunc, the
promotion gate), the rows of a date (training and scoring), the bands, the redaction of secrets,
the defaults shared by training and serving, and the homes of the portfolio, the worklist and
revenue at risk (the API and the console call the same functions). The survey rules have their
own agreement tests (``tests/features/test_surveys.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import ChurnSettings, DataContractError, Tables, validate_tables
from features.health import DEFAULT_HEALTH_BANDS, band_labels
from features.key_events import with_key_events
from features.labels import LabelSettings
from features.rows import feature_rows, labelled_rows, scoring_rows
from features.sources import load_tables

SECRET = "s3cr/t@pw"


@pytest.fixture(scope="module")
def rows_and_models(registered_model):
    """Scoring rows of the default data and the registered model through each of its readers."""
    from serving.loader import load_model
    from training.tracking import load_scorer

    uri = f"models:/{registered_model.model_name}/{registered_model.version}"
    served = load_model(uri, registered_model.tracking_uri)
    scorer, metadata = load_scorer(uri, registered_model.tracking_uri)
    # The model's own key events (chosen in training): the features `churn score` builds.
    tables = with_key_events(load_tables(registered_model.data_dir), metadata["key_events"],
                             metadata["key_event_windows"])
    frame = feature_rows(tables).head(300)
    return frame, served, scorer


def test_served_probability_equals_evaluate_and_the_pyfunc(rows_and_models):
    import mlflow.pyfunc

    from serving.batch import frame_records
    from serving.scoring import score_accounts

    frame, served, scorer = rows_and_models
    names = served.encoder.feature_names
    api = np.array([s.churn_probability for s in
                    score_accounts(served, frame_records(frame, names), reasons=3)])
    evaluate = scorer.predict(frame)  # what `churn evaluate` and the promotion gate call
    pyfunc = np.asarray(mlflow.pyfunc.load_model(served.source).predict(frame[names]))
    np.testing.assert_allclose(api, evaluate, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pyfunc, evaluate, rtol=0, atol=1e-12)
    assert served.calibrated and evaluate.std() > 0.01  # a calibrated model, real scores


def _gap_tables(grace_days: int | None) -> Tables:
    """Account "gap" leaves on 2024-02-20 and comes back on 2024-03-10; "steady" stays."""
    subs = pd.DataFrame({
        "account_id": ["gap", "gap", "steady"],
        "start_date": pd.to_datetime(["2023-06-01", "2024-03-10", "2023-06-01"]),
        "end_date": pd.to_datetime(["2024-02-20", None, None])})
    accounts = pd.DataFrame({"account_id": ["gap", "steady"]})
    return validate_tables(Tables(accounts, subs, churn=ChurnSettings(grace_days=grace_days)))


@pytest.mark.parametrize(("grace", "active"), [(0, ["steady"]), (30, ["gap", "steady"])])
def test_training_and_scoring_rows_of_a_date_are_the_same_accounts(grace, active):
    """One rule picks the accounts of a date: with the data set's grace period the gap is churn
    (grace 0) or a renewal (grace 30), for training rows and scoring rows alike."""
    tables = _gap_tables(grace)
    date = pd.Timestamp("2024-03-01")
    training = labelled_rows(tables, LabelSettings(horizon_days=30, grace_days=grace),
                             observed_until="2024-06-01", first=date)
    assert sorted(training.loc[training.as_of == date, "account_id"]) == active
    assert sorted(scoring_rows(tables, [date])["account_id"]) == active
    assert sorted(feature_rows(tables, [date])["account_id"]) == active


def test_health_bands_are_one_rule_for_serving_and_the_backtest():
    from training.metrics import health_backtest

    health = np.array([95.0, 70.0, 69.9, 40.0, 10.0, np.nan, 0.0])
    labels = band_labels(health, DEFAULT_HEALTH_BANDS)
    assert labels == ["green", "green", "amber", "amber", "red", None, "red"]
    report = health_backtest(np.array([0, 0, 1, 0, 1, 1, 1]), health)
    counts = {band: info["accounts"] for band, info in report["bands"].items()}
    assert counts == {"green": 2, "amber": 2, "red": 2, "no data": 1}


def test_every_error_that_quotes_a_url_masks_its_secrets(tmp_path):
    from serving.loader import load_model
    from serving.model import ModelLoadError
    from serving.store import ScoreStore, StoreError

    url = f"postgresql://churn:{SECRET}@127.0.0.1:9/db?sslpassword=hunter2"
    with pytest.raises(DataContractError) as data_error:
        load_tables(url)
    with pytest.raises(StoreError) as store_error:
        ScoreStore(url.replace("postgresql", "nosuchdriver")).exists()
    with pytest.raises(ModelLoadError) as model_error:
        load_model("models:/churn-risk@champion", f"http://ops:{SECRET}@127.0.0.1:9")
    for error in (data_error, store_error, model_error):
        text = str(error.value)
        assert "127.0.0.1" in text and SECRET not in text and "hunter2" not in text, text


def test_training_and_serving_share_their_defaults(monkeypatch):
    from features.mlflow_defaults import DEFAULT_TRACKING_URI, champion_uri
    from features.surveys import CHURNER_ALARM, DEFAULT_POLICY, WILDCARD_ALARM
    from serving.settings import ServingSettings
    from training.tracking import Registry

    for env in (None, "sqlite:////tmp/elsewhere.db"):
        if env is None:
            monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        else:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
        expected = env or DEFAULT_TRACKING_URI
        assert ServingSettings().tracking_uri == Registry().uri == expected
    settings = ServingSettings()
    assert settings.model_uri == champion_uri()
    assert settings.survey_policy == DEFAULT_POLICY
    assert (settings.churner_alarm, settings.wildcard_alarm) == (CHURNER_ALARM, WILDCARD_ALARM)


def test_portfolio_worklist_and_revenue_at_risk_have_one_home_each():
    """The console's pages and the API call the same functions: the alarms are computed in
    serving/portfolio.py only, the worklist in serving/worklist.py, revenue at risk defined once."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    used: dict[str, set[str]] = {}  # names read (called or passed on), by file
    defined: dict[str, set[str]] = {}
    for path in [*root.glob("serving/**/*.py"), *root.glob("cli/*.py")]:
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.setdefault(node.id, set()).add(where)
            if isinstance(node, ast.FunctionDef):
                defined.setdefault(node.name, set()).add(where)
    assert used["quadrant_alarms"] == {"serving/portfolio.py"}
    assert used["portfolio_summary"] == {"serving/api/routes/history.py",
                                         "serving/api/routes/pages.py"}
    routes = {"serving/api/routes/worklist.py", "serving/api/routes/pages.py"}
    # serving/api/main.py names the router module ``worklist``, nothing more.
    assert routes <= used["worklist"] <= routes | {"serving/api/main.py"}
    assert used["revenue_at_risk"] == {"serving/store.py"}
    assert defined["revenue_at_risk"] == {"serving/scoring.py"}
