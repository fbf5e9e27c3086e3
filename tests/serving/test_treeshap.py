"""The per-leaf TreeSHAP tables give LightGBM's ``pred_contrib`` numbers, on real boosters."""

from __future__ import annotations

import logging

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.definitions import CATALOGUE, categorical_features
from features.encoder import FeatureEncoder
from serving.model import load_from_dir
from serving.scoring import score_accounts
from serving.treeshap import TOLERANCE, TreeShap, Unsupported, fast_treeshap
from tests.serving.conftest import random_feature_frame, write_model_dir

N_FEATURES = 6


def _data(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Numeric features with NaN and exact zeros, two categorical (codes 0-4 and 0-59: LightGBM
    keeps more than 32 categories in several bitset words), a label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, N_FEATURES)).round(1)
    x[:, 0] = rng.integers(0, 5, n)
    x[:, 3] = rng.integers(0, 60, n)
    x[rng.uniform(size=x.shape) < 0.15] = np.nan
    x[rng.uniform(size=x.shape) < 0.1] = 0.0
    signal = (np.nan_to_num(x[:, 1]) - np.nan_to_num(x[:, 2]) * 0.5 + (x[:, 0] == 2) * 1.5
              + (np.nan_to_num(x[:, 3]) % 3 == 0) * 1.0)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-signal))).astype(int)
    return x, y


def _booster(seed: int, **params: object) -> lgb.Booster:
    x, y = _data(seed)
    base = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed,
            "num_leaves": 15, "max_depth": 5, "min_data_in_leaf": 5, "min_data_per_group": 5,
            "cat_smooth": 1.0}
    return lgb.train({**base, **params}, lgb.Dataset(x, y, categorical_feature=[0, 3]),
                     num_boost_round=30)


def _rows(seed: int, n: int = 200) -> np.ndarray:
    """Unseen rows: wider ranges, unknown and negative categories, NaN, zeros, huge values."""
    rng = np.random.default_rng(seed + 1000)
    x = rng.normal(0, 4, (n, N_FEATURES)).round(1)
    x[:, 0] = rng.integers(-1, 8, n)
    x[:, 3] = rng.integers(-1, 70, n)
    x[rng.uniform(size=x.shape) < 0.2] = np.nan
    x[rng.uniform(size=x.shape) < 0.1] = 0.0
    x[rng.uniform(size=x.shape) < 0.02] = 1e308
    x[rng.uniform(size=x.shape) < 0.02] = -1e-36  # LightGBM reads |x| <= 1e-35 as 0
    return x


def _assert_same(tables: TreeShap, booster: lgb.Booster, rows: np.ndarray) -> None:
    ours = tables.contributions(rows)
    theirs = booster.predict(rows, pred_contrib=True, num_threads=1)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(ours.sum(axis=1), booster.predict(rows, raw_score=True),
                               rtol=0, atol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), num_leaves=st.integers(2, 31),
       max_depth=st.sampled_from([-1, 2, 3, 5, 8]),
       missing=st.sampled_from(["nan", "zero", "none"]))
def test_tables_equal_pred_contrib(seed, num_leaves, max_depth, missing):
    """Any depth, numeric and categorical splits, every missing-value mode LightGBM has."""
    params = {"num_leaves": num_leaves, "max_depth": max_depth}
    if missing == "zero":
        params["zero_as_missing"] = True
    elif missing == "none":
        params["use_missing"] = False
    booster = _booster(seed, **params)
    tables = TreeShap.from_booster(booster)
    _assert_same(tables, booster, _rows(seed))
    _assert_same(tables, booster, tables.probe_rows(seed=seed))


def test_split_at_infinity_and_exact_thresholds():
    """LightGBM splits "missing against everything" at threshold inf, which dump_model() writes
    as 1e300: a value above 1e300 must still go left, and values at a threshold and one ulp
    above it must go the way LightGBM sends them."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (600, 2))
    missing = rng.uniform(size=600) < 0.3
    x[missing, 1] = np.nan
    y = missing.astype(int)  # the label is "feature 1 is missing"
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1,
                         "num_leaves": 4, "min_data_in_leaf": 5}, lgb.Dataset(x, y),
                        num_boost_round=5)
    thresholds = [v for line in booster.model_to_string().splitlines()
                  if line.startswith("threshold=") for v in line[len("threshold="):].split()]
    assert "inf" in thresholds  # the case this test is about
    tables = TreeShap.from_booster(booster)
    rows = np.array([[0.0, 1e301], [0.0, 1.7e308], [0.0, np.nan], [0.0, 0.0]])
    _assert_same(tables, booster, np.vstack([rows, tables.probe_rows()]))


def test_deep_trees_are_refused_not_truncated():
    booster = _booster(1, num_leaves=31, max_depth=-1)
    with pytest.raises(Unsupported, match="exceed"):
        TreeShap.from_booster(booster, max_table_entries=100)


def test_multiclass_and_linear_trees_are_refused():
    x, _ = _data(2)
    y = np.random.default_rng(2).integers(0, 3, len(x))
    multi = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1,
                       "num_threads": 1}, lgb.Dataset(x, y), num_boost_round=3)
    with pytest.raises(Unsupported, match="multiclass"):
        TreeShap.from_booster(multi)
    x = np.nan_to_num(x[:, 1:])
    linear = lgb.train({"objective": "binary", "linear_tree": True, "verbose": -1,
                        "num_threads": 1}, lgb.Dataset(x, (x[:, 0] > 0).astype(int)),
                       num_boost_round=3)
    with pytest.raises(Unsupported, match="linear"):
        TreeShap.from_booster(linear)


def test_a_wrong_table_is_caught_by_the_load_check():
    """fast_treeshap compares with pred_contrib before anything is served from the tables."""
    booster = _booster(4)
    tables = fast_treeshap(booster)
    assert tables.verify(booster) <= TOLERANCE
    tables.table[:] *= 1.001  # what a bug in the tables would look like
    assert tables.verify(booster) > TOLERANCE


def test_input_shape_is_checked():
    tables = TreeShap.from_booster(_booster(5))
    with pytest.raises(ValueError, match=f"{N_FEATURES} features"):
        tables.contributions(np.zeros((1, N_FEATURES + 1)))


def test_loaded_model_explains_with_tables_and_scores_like_lightgbm(tiny_model_dir):
    """The served model: same probabilities and reasons from either engine."""
    fast = load_from_dir(tiny_model_dir)
    slow = load_from_dir(tiny_model_dir, treeshap="lightgbm")
    assert (fast.treeshap_engine, slow.treeshap_engine) == ("tables", "lightgbm")
    frame, _ = random_feature_frame(300, seed=9)
    accounts = [(str(i), {k: (None if v is None or v != v else v) for k, v in r.items()})
                for i, r in enumerate(frame.to_dict("records"))]
    a = score_accounts(fast, accounts, reasons=3)
    b = score_accounts(slow, accounts, reasons=3)
    for x, y in zip(a, b, strict=True):
        assert x.churn_probability == pytest.approx(y.churn_probability, abs=1e-12)
        assert [r["feature"] for r in x.reasons] == [r["feature"] for r in y.reasons]
        assert [r["text"] for r in x.reasons] == [r["text"] for r in y.reasons]
        np.testing.assert_allclose([r["contribution"] for r in x.reasons],
                                   [r["contribution"] for r in y.reasons], atol=1e-9)


def test_a_model_the_tables_cannot_take_is_served_with_lightgbm(tmp_path, caplog):
    """Deep trees (here: unlimited depth, 255 leaves) load, explained by pred_contrib, with a
    warning that says why."""
    frame, y = random_feature_frame(3000, seed=11)
    names = [spec.name for spec in CATALOGUE]
    encoder = FeatureEncoder(names, categorical_features()).fit(frame)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1,
                         "num_leaves": 255, "max_depth": -1, "min_data_in_leaf": 2},
                        lgb.Dataset(encoder.transform(frame), y, feature_name=names,
                                    categorical_feature=encoder.categorical_indices),
                        num_boost_round=40)
    model_dir = write_model_dir(tmp_path / "deep", booster, encoder)
    with caplog.at_level(logging.WARNING, logger="serving.loader"):
        model = load_from_dir(model_dir)
    assert model.treeshap_engine == "lightgbm"
    assert "pred_contrib" in caplog.text and "exceed" in caplog.text
    scores = score_accounts(model, [("a", {"active_days_30d": 3.0})], reasons=3)
    assert scores[0].reasons
