from __future__ import annotations

import math

import numpy as np
import pytest

from features.health import (
    COMPONENTS,
    DEFAULT_HEALTH_BANDS,
    DEFAULT_WEIGHTS,
    band_labels,
    blend,
    component_scores,
)
from serving.scoring import AccountColumns, Bands, score_accounts
from tests.serving.conftest import random_feature_frame


def _records(n: int, seed: int = 1) -> list[tuple[str, dict]]:
    frame, _ = random_feature_frame(n, seed)
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        record = {k: v for k, v in row.items()
                  if v is not None and not (isinstance(v, float) and math.isnan(v))}
        out.append((f"A{i}", record))
    return out


FULL = {"active_days_30d": 18, "active_users_per_seat_30d": 0.8, "catalogue_share_30d": 0.5,
        "events_trend_30d": 0.1, "proactive_touchpoints_90d": 2, "days_since_last_proactive": 10,
        "reactive_touchpoints_90d": 1, "open_tickets": 0, "last_nps": 9,
        "csat_satisfied_share_180d": 1.0, "plan": "enterprise", "seats": 50, "tenure_days": 800}


def test_probability_is_the_booster_on_encoded_records(tiny_model):
    accounts = _records(50)
    results = score_accounts(tiny_model, accounts)
    expected = tiny_model.booster.predict(
        tiny_model.encoder.transform_records([r for _, r in accounts]))
    got = np.array([r.churn_probability for r in results])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert [r.account_id for r in results] == [a for a, _ in accounts]
    assert ((got >= 0) & (got <= 1)).all()


def test_records_and_pandas_encodings_agree(tiny_model):
    frame, _ = random_feature_frame(40, seed=5)
    accounts = _records(40, seed=5)
    results = score_accounts(tiny_model, accounts)
    expected = tiny_model.booster.predict(tiny_model.encoder.transform(frame))
    np.testing.assert_allclose([r.churn_probability for r in results], expected, atol=1e-12)


def test_batch_equals_one_by_one(tiny_model):
    accounts = _records(20, seed=2)
    batch = score_accounts(tiny_model, accounts)
    single = [score_accounts(tiny_model, [a])[0] for a in accounts]
    assert batch == single


@pytest.mark.parametrize("reasons", [0, 3])
def test_columns_score_like_records(tiny_model, reasons):
    # Features left out, sent as null, an unseen category, a quadrant sent as a feature and a
    # feature outside the model: the column form must give exactly the record form's scores.
    accounts = _records(30, seed=4) + [("full", FULL), ("empty", {}),
                                       ("odd", {"plan": "platinum", "mrr": None,
                                                "csat_nps_quadrant": "Wildcard",
                                                "days_since_last_survey": 400})]
    names = sorted({name for _, record in accounts for name in record})
    columns = AccountColumns([a for a, _ in accounts],
                             {n: [record.get(n) for _, record in accounts] for n in names})
    by_records = score_accounts(tiny_model, accounts, reasons=reasons)
    by_columns = score_accounts(tiny_model, columns, reasons=reasons)
    assert by_columns == by_records
    assert by_records[-1].quadrant == "Wildcard" and "plan" in by_records[-1].missing_features
    assert columns.records() == [(a, {n: record.get(n) for n in names}) for a, record in accounts]


def test_health_is_the_blend_of_components(tiny_model):
    accounts = [("full", FULL), ("empty", {})]
    results = score_accounts(tiny_model, accounts)
    p = np.array([r.churn_probability for r in results])
    cols = {k: np.array([FULL.get(k, np.nan), np.nan], dtype=float)
            for k in FULL if k != "plan"}
    comps = component_scores(cols, p)
    health, weights = blend(comps, DEFAULT_WEIGHTS)
    full, empty = results
    assert full.health_score == pytest.approx(health[0], abs=0.01)
    assert full.health_band == band_labels(health[:1], DEFAULT_HEALTH_BANDS)[0]
    for c in COMPONENTS:
        assert full.components[c] == pytest.approx(comps[c][0], abs=0.01)
        assert full.weights[c] == pytest.approx(weights[c][0], abs=1e-4)
    assert full.components_without_data == []
    assert sum(full.weights.values()) == pytest.approx(1.0, abs=1e-3)
    # Nothing sent: only the model's risk component has data and it carries all the weight.
    assert empty.components == {"usage": None, "engagement": None, "sentiment": None,
                                "risk": pytest.approx(100 * (1 - p[1]), abs=0.01)}
    assert empty.weights == {"usage": 0.0, "engagement": 0.0, "sentiment": 0.0, "risk": 1.0}
    assert empty.health_score == pytest.approx(100 * (1 - p[1]), abs=0.01)
    assert empty.components_without_data == ["usage", "engagement", "sentiment"]


def test_missing_features_lists_what_was_not_sent(tiny_model):
    (result,) = score_accounts(tiny_model, [("A", {"plan": "growth", "mrr": None,
                                                   "active_days_30d": 3})])
    names = tiny_model.encoder.feature_names
    assert result.missing_features == [n for n in names if n not in ("plan", "active_days_30d")]
    cats = tiny_model.encoder.categories_
    (full,) = score_accounts(tiny_model, [("A", {n: (cats[n][0] if n in cats else 1.0)
                                                 for n in names})])
    assert full.missing_features == []


def test_unknown_category_scores_like_missing(tiny_model):
    known, unknown, missing = score_accounts(tiny_model, [
        ("a", {"plan": "starter"}), ("b", {"plan": "platinum"}), ("c", {})])
    assert unknown.churn_probability == missing.churn_probability
    assert "plan" in unknown.missing_features  # sent, but scored as missing: says so


def test_risk_bands_thresholds():
    bands = {"high": 0.3, "medium": 0.1, "low": 0.0}
    values = np.array([0.0, 0.0999, 0.1, 0.29, 0.3, 1.0, np.nan])
    assert band_labels(values, bands) == ["low", "low", "medium", "medium", "high", "high", None]


def test_custom_weights_and_bands(tiny_model):
    (r,) = score_accounts(tiny_model, [("A", FULL)], weights={"risk": 1.0},
                          bands=Bands(risk={"all": 0.0}, health={"ok": 0.0}))
    assert r.weights == {"usage": 0.0, "engagement": 0.0, "sentiment": 0.0, "risk": 1.0}
    assert r.health_score == r.components["risk"]
    assert r.components["usage"] is not None  # computed, just not weighted
    assert (r.risk_band, r.health_band) == ("all", "ok")


def test_empty_batch(tiny_model):
    assert score_accounts(tiny_model, []) == []


def test_single_row_does_not_use_pandas(tiny_model, monkeypatch):
    import pandas as pd

    def boom(*args, **kwargs):
        raise AssertionError("pandas used on the scoring path")

    monkeypatch.setattr(pd, "DataFrame", boom)
    monkeypatch.setattr(pd, "Categorical", boom)
    monkeypatch.setattr(pd, "to_numeric", boom)
    assert len(score_accounts(tiny_model, [("A", FULL)])) == 1


@pytest.mark.parametrize("n", [1, 5, 40])
def test_fast_encoding_equals_the_feature_encoder(tiny_model, n):
    accounts = _records(n, seed=11)
    records = [r for _, r in accounts]
    records[0] = {**records[0], "plan": "platinum"}  # a category the model has not seen: NaN
    matrix, missing = tiny_model.encode(records)
    np.testing.assert_array_equal(matrix, tiny_model.encoder.transform_records(records))
    names = tiny_model.encoder.feature_names
    expected = np.array([[r.get(name) is None for name in names] for r in records])
    expected[0, names.index("plan")] = True  # ... and listed as missing: the model saw none
    np.testing.assert_array_equal(missing, expected)


def _collections_while_scoring(model, body: bytes, requests: int) -> int:
    """Cyclic-GC collections while ``requests`` big requests are parsed and scored, each kept
    alive (as a worker keeps the requests in flight)."""
    import gc

    from serving.schemas import score_request_model

    schema = score_request_model(1000)
    started: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(info["generation"])

    live = []
    gc.callbacks.append(count)
    try:
        for _ in range(requests):
            request = schema.model_validate_json(body)
            scores = score_accounts(model, [(a.account_id, a.features.__dict__)
                                            for a in request.accounts])
            live.append((request, scores))
    finally:
        gc.callbacks.remove(count)
    return len(started)


def test_settled_gc_leaves_batch_requests_alone(tiny_model):
    """After ``settle_gc`` (run once a worker's model is loaded) 1,000-account requests set off at
    most one collection each; CPython's default threshold sets off over ten per request."""
    import gc
    import json

    from serving.app import settle_gc

    body = json.dumps({"accounts": [{"account_id": a, "features": r}
                                    for a, r in _records(1000, seed=5)]}).encode()
    default = gc.get_threshold()
    try:
        gc.set_threshold(700, *default[1:])
        before = _collections_while_scoring(tiny_model, body, 4)
        settle_gc()
        after = _collections_while_scoring(tiny_model, body, 4)
        assert gc.get_threshold()[1:] == default[1:]  # only the young generation is changed
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()
    assert before > 4 * 10
    assert after <= 4


def test_settle_gc_leaves_a_disabled_threshold_off():
    import gc

    from serving.app import settle_gc

    default = gc.get_threshold()
    try:
        gc.set_threshold(0)
        settle_gc()
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()
