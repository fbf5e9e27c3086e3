"""The leakage guard: a feature that alone separates the label stops the run, named, unless kept
deliberately."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import TrainConfig
from training.dataset import build_training_set, resolve_label
from training.leakage import LeakageError, check_leakage, single_feature_auc
from training.run import fit_run


def test_single_feature_auc_in_either_direction_and_for_categories():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert single_feature_auc(pd.Series([1, 2, 3, 4, 5, 6.0]), y) == 1.0
    assert single_feature_auc(pd.Series([6, 5, 4, 3, 2, 1.0]), y) == 1.0
    assert single_feature_auc(pd.Series(list("aaabbb"), dtype="string"), y) == 1.0
    assert single_feature_auc(pd.Series([np.nan] * 3 + [1.0] * 3), y) == 1.0  # missing = a value
    assert single_feature_auc(pd.Series([1, 2, 1, 2, 1, 2.0]), y) < 0.7


def test_a_leaky_feature_stops_the_run_unless_kept_deliberately(small_tables):
    config = resolve_label(TrainConfig.model_validate({"label": {"horizon_days": 30},
                                                       "split": {"backtest_folds": 0}}),
                           small_tables)
    ts = build_training_set(small_tables, config)
    rng = np.random.default_rng(0)
    # A "cancellation requested" flag: filled in when the customer is already leaving (and on a
    # few others by mistake).
    ts.frame["cancel_requested"] = np.maximum(ts.frame["churned"],
                                              rng.uniform(size=len(ts.frame)) < 0.01)
    ts.feature_names.append("cancel_requested")
    with pytest.raises(LeakageError) as info:
        fit_run(small_tables, config, training_set=ts)
    message = str(info.value)
    assert message.startswith("cancel_requested (ROC AUC 0.99") and "allow_leaky" in message
    assert "features.exclude" in message
    kept = config.model_copy(deep=True)
    kept.features.allow_leaky = ["cancel_requested"]
    run = fit_run(small_tables, kept, training_set=ts)
    assert "cancel_requested" in run.final.model.encoder_.feature_names  # kept, as asked


def test_the_default_catalogue_passes_the_guard(small_tables):
    config = resolve_label(TrainConfig.model_validate({"label": {"horizon_days": 30}}), small_tables)
    ts = build_training_set(small_tables, config)
    aucs = check_leakage(ts.X, ts.y)
    assert set(aucs) == set(ts.feature_names) and max(aucs.values()) < 0.98
