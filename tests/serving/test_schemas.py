from __future__ import annotations

import pytest
from pydantic import ValidationError

from features.definitions import feature_names
from serving.schemas import (
    AccountFeatures,
    AccountScoreOut,
    ScoreRequest,
    ScoreResponse,
    score_request_model,
)


def _request(features: dict, model=ScoreRequest):
    return model.model_validate({"accounts": [{"account_id": "A1", "features": features}]})


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple, str]]:
    return [(tuple(e["loc"]), e["type"]) for e in exc.value.errors()]


def test_every_catalogue_feature_is_an_optional_field_but_not_all_may_be_missing():
    assert list(AccountFeatures.model_fields) == feature_names()
    req = _request({"plan": "growth"})
    assert sum(v is not None for v in req.accounts[0].features.__dict__.values()) == 1
    for features in ({}, {"mrr": None, "plan": None}):
        with pytest.raises(ValidationError) as exc:
            _request(features)
        assert _errors(exc) == [(("accounts", 0, "features"), "no_known_feature")]


@pytest.mark.parametrize(("feature", "value", "error"), [
    ("last_nps", 1e20, "less_than_equal"), ("last_nps", -1, "greater_than_equal"),
    ("catalogue_share_30d", 1.5, "less_than_equal"), ("open_tickets", -2, "greater_than_equal"),
    ("events_trend_30d", -1.5, "greater_than_equal"), ("nps_survey_due", 2, "less_than_equal"),
])
def test_values_that_cannot_be_true_are_refused(feature, value, error):
    with pytest.raises(ValidationError) as exc:
        _request({feature: value})
    assert _errors(exc) == [(("accounts", 0, "features", feature), error)]
    # Negative gaps and slopes are meaningful: unbounded.
    _request({"check_in_gap_days": -20, "events_slope_90d": -3.0, "mrr_change_90d": 6.2})


def test_valid_request_keeps_values_and_types():
    req = _request({"active_days_30d": 12, "mrr": 99.5, "plan": "growth", "last_nps": None})
    f = req.accounts[0].features
    assert (f.active_days_30d, f.mrr, f.plan, f.last_nps) == (12.0, 99.5, "growth", None)
    assert isinstance(f.active_days_30d, float)


def test_unknown_feature_is_named():
    with pytest.raises(ValidationError) as exc:
        _request({"active_days_30d": 1, "favourite_colour": "blue"})
    assert _errors(exc) == [(("accounts", 0, "features", "favourite_colour"), "extra_forbidden")]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_rejected(value):
    with pytest.raises(ValidationError) as exc:
        _request({"mrr": value})
    assert _errors(exc) == [(("accounts", 0, "features", "mrr"), "finite_number")]


@pytest.mark.parametrize("value", ["12", True, [1], {"a": 1}])
def test_numeric_features_must_be_numbers(value):
    with pytest.raises(ValidationError) as exc:
        _request({"active_days_30d": value})
    assert _errors(exc)[0][0] == ("accounts", 0, "features", "active_days_30d")


@pytest.mark.parametrize("value", [3, 1.5, True])
def test_categorical_features_must_be_strings(value):
    with pytest.raises(ValidationError) as exc:
        _request({"plan": value})
    assert _errors(exc) == [(("accounts", 0, "features", "plan"), "string_type")]


def test_account_id_required_and_numbers_become_strings():
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate({"accounts": [{"features": {}}]})
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate({"accounts": [{"account_id": "", "features": {}}]})
    req = ScoreRequest.model_validate({"accounts": [{"account_id": 42, "features": {"mrr": 1}}]})
    assert req.accounts[0].account_id == "42"


def test_empty_batch_is_rejected():
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate({"accounts": []})


def test_batch_limit_is_one_too_long_error_before_items_are_validated():
    model = score_request_model(3)
    ok = {"account_id": "A", "features": {"seats": 3}}
    assert len(model.model_validate({"accounts": [ok] * 3}).accounts) == 3
    bad = {"account_id": "A", "features": {"nope": 1}}
    with pytest.raises(ValidationError) as exc:
        model.model_validate({"accounts": [bad] * 4})
    assert _errors(exc) == [(("accounts",), "too_long")]


def test_response_describes_probability_and_health():
    schema = ScoreResponse.model_json_schema()
    score = schema["$defs"]["AccountScoreOut"]["properties"]
    assert "probability" in score["churn_probability"]["description"]
    assert "not a" in score["churn_probability"]["description"]
    assert "100 = healthiest" in score["health_score"]["description"]
    assert set(AccountScoreOut.model_fields) == {
        "account_id", "churn_probability", "risk_band", "health_score", "health_band",
        "components", "weights", "missing_features", "components_without_data", "health_note",
        "quadrant", "survey_due", "survey_due_reasons", "raw_score", "reasons", "reasons_rest"}
