"""Reasons from LightGBM's TreeSHAP contributions, and the quadrant / survey-due rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.explain import Explainer, format_value
from serving.scoring import health_note, score_accounts
from tests.serving.test_scoring import FULL, _records


def test_contributions_sum_to_the_raw_score_and_give_the_probability(tiny_model):
    accounts = _records(30, seed=4)
    n_features = len(tiny_model.encoder.feature_names)
    results = score_accounts(tiny_model, accounts, reasons=n_features)
    matrix = tiny_model.encoder.transform_records([r for _, r in accounts])
    raw = tiny_model.booster.predict(matrix, raw_score=True)
    proba = tiny_model.booster.predict(matrix)
    for r, expected_raw, expected_p in zip(results, raw, proba, strict=True):
        assert r.raw_score == pytest.approx(expected_raw, abs=1e-9)
        assert r.churn_probability == pytest.approx(expected_p, abs=1e-12)
        total = sum(reason["contribution"] for reason in r.reasons) + r.reasons_rest
        assert total == pytest.approx(expected_raw, abs=1e-9)
        # biggest first, the direction is the sign
        sizes = [abs(reason["contribution"]) for reason in r.reasons]
        assert sizes == sorted(sizes, reverse=True)
        for reason in r.reasons:
            assert reason["direction"] == ("raises_risk" if reason["contribution"] > 0
                                           else "lowers_risk")


def test_reasons_are_the_top_contributions_in_plain_language(tiny_model):
    (r,) = score_accounts(tiny_model, [("A", {**FULL, "active_days_30d": 2})], reasons=3)
    matrix = tiny_model.encoder.transform_records([{**FULL, "active_days_30d": 2}])
    contrib = tiny_model.booster.predict(matrix, pred_contrib=True)[0, :-1]
    names = tiny_model.encoder.feature_names
    top = [names[j] for j in np.argsort(-np.abs(contrib))[:3]]
    assert [reason["feature"] for reason in r.reasons] == top
    by_feature = {reason["feature"]: reason for reason in r.reasons}
    # The tiny model is trained with a label driven by active days: it must be a driver.
    assert "active_days_30d" in by_feature
    reason = by_feature["active_days_30d"]
    assert reason["text"] == "Days with any product use in the last 30 days: 2 days"
    assert reason["direction"] == "raises_risk" and reason["value"] == 2


def test_no_reasons_means_no_treeshap(tiny_model, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("contributions computed without being asked")

    monkeypatch.setattr(type(tiny_model), "contributions", boom)
    (r,) = score_accounts(tiny_model, [("A", FULL)], reasons=0)
    assert r.reasons is None and r.reasons_rest is None
    assert r.raw_score == pytest.approx(
        tiny_model.booster.predict(tiny_model.encoder.transform_records([FULL]), raw_score=True)[0])


def test_change_from_the_previous_window_is_spelled_out(tiny_model):
    explainer = Explainer.for_features(tiny_model.encoder.feature_names)
    j = tiny_model.encoder.feature_names.index("events_30d")
    contrib = np.zeros(len(tiny_model.encoder.feature_names) + 1)
    contrib[j] = -0.7
    (reason,) = explainer.reasons(contrib, {"events_30d": 12.0, "events_prev_30d": 30.0}, 3)
    assert reason["text"] == ("Product events in the last 30 days: 12 events, down 60 % from the "
                              "previous 30 days (30)")
    assert (reason["direction"], reason["size"]) == ("lowers_risk", "strong")
    contrib[j] = 0.2
    (reason,) = explainer.reasons(contrib, {"events_30d": 5.0, "events_prev_30d": 0.0}, 3)
    assert reason["text"].endswith("5 events, up from 0 in the previous 30 days")
    assert reason["size"] == "moderate"


@pytest.mark.parametrize(("value", "feature", "text"), [
    (None, "active_days_30d", "no data"), (float("nan"), "mrr", "no data"),
    (0.45, "catalogue_share_30d", "45 %"), (-0.6, "events_trend_30d", "-60 %"),
    (3.0, "days_since_last_event", "3 days"), (1234.5, "mrr", "1,234"),
    ("growth", "plan", "growth"), (8.0, "last_nps", "8"), (0.25, "open_tickets", "0.25 tickets"),
])
def test_format_value(value, feature, text):
    from features.definitions import catalogue_by_name

    assert format_value(value, catalogue_by_name()[feature]) == text


def test_quadrant_and_survey_due_in_scores(tiny_model):
    detractor = {"last_nps": 2, "csat_satisfied_share_180d": 0.1, "days_since_last_nps_sent": 300,
                 "tenure_days": 700}
    promoter = {"last_nps": 10, "csat_satisfied_share_180d": 1.0, "days_since_last_nps_sent": 20,
                "tenure_days": 700}
    a, b, c = score_accounts(tiny_model, [("a", detractor), ("b", promoter), ("c", {})])
    assert (a.quadrant, a.survey_due, a.survey_due_reasons) == (
        "Churner", True, ["nps_survey_due"])
    assert (b.quadrant, b.survey_due) == ("Advocate", False)
    assert (c.quadrant, c.survey_due) == (None, False)


def test_sent_quadrant_and_flags_fill_in_where_their_inputs_are_missing(tiny_model):
    """The rules apply to the features they rest on; the quadrant and flags as sent (built by
    the same rules) count only where those features were not sent."""
    detractor = {"last_nps": 2, "csat_satisfied_share_180d": 0.1, "days_since_last_nps_sent": 300,
                 "tenure_days": 700}
    a, b, c = score_accounts(tiny_model, [
        ("a", {**detractor, "csat_nps_quadrant": "Wildcard", "nps_survey_due": 0.0}),
        ("b", {"csat_nps_quadrant": "Wildcard", "nps_survey_due": 0.0,
               "onboarding_survey_due": 1.0}),
        ("c", {"last_nps": 9, "csat_nps_quadrant": "Churner", "nps_survey_due": None})])
    assert (a.quadrant, a.survey_due_reasons) == ("Churner", ["nps_survey_due"])
    assert (b.quadrant, b.survey_due_reasons) == ("Wildcard", ["onboarding_survey_due"])
    assert (c.quadrant, c.survey_due) == ("Churner", False)


def test_health_note_states_the_renormalisation(tiny_model):
    weights = {"usage": 0.3, "engagement": 0.2, "sentiment": 0.2, "risk": 0.3}
    assert health_note(weights, []) is None
    assert health_note(weights, ["sentiment"]) == (
        "No data for sentiment: its weight 0.2 was shared among usage, engagement, risk in "
        "proportion to their weights.")
    no_surveys = {k: v for k, v in FULL.items() if k not in ("last_nps", "csat_satisfied_share_180d")}
    (r,) = score_accounts(tiny_model, [("A", no_surveys)], weights)
    assert r.components_without_data == ["sentiment"]
    assert r.weights["sentiment"] == 0 and r.health_note.startswith("No data for sentiment")
    assert r.weights["usage"] == pytest.approx(0.3 / 0.8, abs=1e-4)
    assert not math.isnan(r.health_score)
