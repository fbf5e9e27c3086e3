"""A snapshot export's model (ibm-telco-churn, trained by the shipped mapping and registered)
served by the same API: loaded from the registry by the app's lifespan, scored over HTTP in
process (TestClient)."""

from __future__ import annotations

import pytest

from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.conftest import local_client, wait_for_model

CUSTOMER = {"tenure": 1, "monthly_charges": 70.7, "total_charges": 70.7, "senior_citizen": 0,
            "contract": "Month-to-month", "internet_service": "Fiber optic",
            "payment_method": "Electronic check", "tech_support": "No", "gender": "Female"}
LOYAL = {**CUSTOMER, "tenure": 70, "total_charges": 4900.0, "contract": "Two year",
         "payment_method": "Credit card (automatic)", "tech_support": "Yes"}


@pytest.fixture(scope="module")
def api(snapshot_models, tmp_path_factory):
    settings = ServingSettings(tracking_uri=snapshot_models.tracking_uri,
                               model_uri="models:/ibm-telco-churn@champion", poll_seconds=0,
                               score_store_url=f"sqlite:///{tmp_path_factory.mktemp('s')}/s.db")
    with local_client(create_app(settings)) as client:
        assert wait_for_model(client)["model_name"] == "ibm-telco-churn"  # no store: degraded
        yield client


def test_a_snapshot_model_scores_its_attributes_with_reasons_and_a_marked_health_score(api):
    response = api.post("/v1/scores", json={"accounts": [
        {"account_id": "new", "features": CUSTOMER}, {"account_id": "loyal", "features": LOYAL}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "ibm-telco-churn" and body["horizon_days"] == 30
    new, loyal = body["scores"]
    assert new["churn_probability"] > loyal["churn_probability"]
    assert new["risk_band"] == "high" and loyal["risk_band"] == "low"
    # No usage, touchpoint or survey data: those components are not applicable, said so.
    assert new["components_without_data"] == ["usage", "engagement", "sentiment"]
    assert new["components"]["risk"] == pytest.approx(new["health_score"], abs=0.01)
    assert "No data for usage, engagement, sentiment" in new["health_note"]
    assert new["quadrant"] is None and new["survey_due"] is False
    # Reasons in the mapping's words and the attribute's unit.
    texts = [r["text"] for r in new["reasons"]]
    assert any(t.startswith("Contract term: Month-to-month; raises") for t in texts), texts
    assert any(t.startswith("Months with the company: 1 month; raises") for t in texts), texts


def test_a_snapshot_model_refuses_values_outside_its_declared_bounds(api):
    response = api.post("/v1/scores", json={"accounts": [
        {"account_id": "x", "features": {**CUSTOMER, "tenure": -3}}]})
    assert response.status_code == 422
    assert "tenure" in response.json()["detail"][0]["field"]


def test_the_pyfunc_of_a_snapshot_model_gives_the_api_probabilities(api, snapshot_models):
    import mlflow
    import pandas as pd

    body = api.post("/v1/scores", json={"accounts": [
        {"account_id": "new", "features": CUSTOMER}, {"account_id": "loyal", "features": LOYAL}]}
                    ).json()
    mlflow.set_tracking_uri(snapshot_models.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/ibm-telco-churn@champion")
    finally:
        mlflow.set_tracking_uri(None)
    schema = model.metadata.get_input_schema()
    frame = pd.DataFrame({  # a feature not sent is a missing value, as in the API
        col.name: pd.Series([r.get(col.name) for r in (CUSTOMER, LOYAL)],
                            dtype=object if "string" in str(col.type) else "float64")
        for col in schema.inputs})
    assert list(model.predict(frame)) == pytest.approx(
        [s["churn_probability"] for s in body["scores"]], abs=1e-9)
