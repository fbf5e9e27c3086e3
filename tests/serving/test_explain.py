"""Reasons from LightGBM's TreeSHAP contributions, and the quadrant / survey-due rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.definitions import CATALOGUE
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
    # One reason per signal: the contributions of its features added up, biggest first.
    signal = {s.name: s.signal_name for s in CATALOGUE}
    sums: dict[str, float] = {}
    for name, c in zip(names, contrib, strict=True):
        sums[signal[name]] = sums.get(signal[name], 0.0) + c
    top = sorted(sums, key=lambda k: -abs(sums[k]))[:3]
    assert [reason["signal"] for reason in r.reasons] == top
    for reason in r.reasons:
        assert reason["contribution"] == pytest.approx(sums[reason["signal"]], abs=1e-12)
        assert set(reason["features"]) == {n for n in names if signal[n] == reason["signal"]}
    by_signal = {reason["signal"]: reason for reason in r.reasons}
    # The tiny model is trained with a label driven by active days: it must be a driver.
    reason = by_signal["active days"]
    assert reason["feature"] == "active_days_30d"
    assert reason["text"] == ("Days with any product use in the last 30 days: 2 days; raises "
                              "the churn risk")
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
                              "previous 30 days (30); lowers the churn risk")
    assert (reason["direction"], reason["size"]) == ("lowers_risk", "strong")
    contrib[j] = 0.2
    (reason,) = explainer.reasons(contrib, {"events_30d": 5.0, "events_prev_30d": 0.0}, 3)
    assert reason["text"].endswith("5 events, up from 0 in the previous 30 days; raises the churn "
                                   "risk")
    assert reason["size"] == "moderate"


@pytest.mark.parametrize(("value", "feature", "text"), [
    (None, "active_days_30d", "no data"), (float("nan"), "mrr", "no data"),
    (0.45, "catalogue_share_30d", "45 %"), (-0.6, "events_trend_30d", "-60 %"),
    (6.2, "mrr_change_90d", "+620 %"), (3.0, "days_since_last_event", "3 days"),
    (1.0, "days_since_last_event", "1 day"), (1234.5, "mrr", "1,234"),
    ("growth", "plan", "growth"), (8.0, "last_nps", "8"), (0.25, "open_tickets", "0.25 tickets"),
    (0.8, "active_users_per_seat_30d", "0.8 users per seat"), (1.0, "nps_survey_due", "yes"),
    (0.34, "events_volatility_30d", "0.34"), (-0.4, "events_slope_90d", "-40 %"),
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


def _typical(spec) -> object:
    if spec.dtype == "category":
        return {"nps_bucket": "detractor", "csat_nps_quadrant": "Churner"}.get(spec.name, "growth")
    low, high = spec.bounds
    return 1.0 if spec.unit == "flag" else (0.4 if high == 1 else 7.0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_every_catalogue_feature_reads_as_a_sentence(sign):
    """Each feature of the catalogue (and a data set's key events) as the one driver of a score:
    its description, its value in its own unit, and a direction word that agrees with the sign."""
    from features.definitions import FeatureConfig, catalogue, catalogue_records

    config = FeatureConfig(key_events=("report_export",), key_event_windows=(30,))
    specs = catalogue(config)
    names = [s.name for s in specs]
    explainer = Explainer.for_features(names, catalogue_records(config))  # as stored with a model
    record = {s.name: _typical(s) for s in specs}
    for j, spec in enumerate(specs):
        contrib = np.zeros(len(names) + 1)
        contrib[j] = 0.3 * sign
        (reason,) = explainer.reasons(contrib, record, 3)
        text = reason["text"]
        label = spec.short or spec.description
        assert reason["feature"] == spec.name and text.startswith(label + ": ")
        value = text[len(label) + 2:text.rindex("; ")].split(", ")[0]  # not the change
        assert value == format_value(record[spec.name], spec) and value != "no data"
        assert " ratio" not in value and (("%" in value) == (spec.unit == "%"))
        word = "raises the churn risk" if sign > 0 else "lowers the churn risk"
        assert text.endswith(word) and reason["direction"] == ("raises_risk" if sign > 0
                                                                else "lowers_risk")
