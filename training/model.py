"""The LightGBM churn model and its logistic-regression baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from features.definitions import catalogue, categorical_features
from features.encoder import FeatureEncoder
from features.scorer import ModelScorer
from training.config import LightGBMSettings


class ChurnModel:
    """LightGBM on the encoded feature matrix; ``predict_proba`` returns churn probabilities."""

    def __init__(self, params: LightGBMSettings | None = None,
                 feature_names: list[str] | None = None,
                 categorical: list[str] | None = None):
        self.params = params or LightGBMSettings()
        self.feature_names = feature_names
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: np.ndarray,  # noqa: N803
            eval_set: tuple[pd.DataFrame, np.ndarray] | None = None) -> ChurnModel:
        """Fit; with ``eval_set`` (a later, time-based validation fold) stop early on its log loss.

        ``best_iteration_`` is the number of boosting rounds kept.
        """
        names = self.feature_names or list(X.columns)
        cats = [c for c in (self.categorical if self.categorical is not None
                            else categorical_features()) if c in names]
        self.encoder_ = FeatureEncoder(names, cats).fit(X)
        data = lgb.Dataset(self.encoder_.transform(X), label=np.asarray(y), feature_name=names,
                           categorical_feature=self.encoder_.categorical_indices,
                           free_raw_data=False)
        valid_sets, callbacks = [], []
        if eval_set is not None and self.params.early_stopping_rounds > 0:
            Xv, yv = eval_set  # noqa: N806
            valid_sets = [lgb.Dataset(self.encoder_.transform(Xv), label=np.asarray(yv),
                                      reference=data)]
            callbacks = [lgb.early_stopping(self.params.early_stopping_rounds, verbose=False)]
        params = {**self.params.params(), "metric": "binary_logloss"}
        self.booster_ = lgb.train(params, data, num_boost_round=self.params.num_boost_round,
                                  valid_sets=valid_sets, callbacks=callbacks)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        return self

    def scorer(self, calibration: Mapping[str, Any] | None = None) -> ModelScorer:
        """The fitted model as the one scorer serving and evaluation use (its best rounds only)."""
        return ModelScorer(self.booster_, self.encoder_, calibration, self.best_iteration_)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Uncalibrated churn probability per row."""
        scorer = self.scorer()
        return scorer.uncalibrated(scorer.raw_score(self.encoder_.transform(X)))

    def feature_importance(self) -> pd.Series:
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.encoder_.feature_names).sort_values(ascending=False)


#: At most this many one-hot columns per categorical feature in the logistic baseline.
MAX_ONE_HOT = 30


def baseline_logistic(X: pd.DataFrame, y: np.ndarray,  # noqa: N803
                      categorical: list[str] | None = None,
                      fat_tailed: list[str] | None = None) -> Pipeline:
    """Logistic regression on the same features: log1p on fat-tailed counts, median imputation
    with missing indicators, one-hot categoricals (both lists default to the declared catalogue's)."""
    cats = [c for c in (categorical_features() if categorical is None else categorical)
            if c in X.columns]
    nums = [c for c in X.columns if c not in cats]
    fat = set(fat_tailed if fat_tailed is not None
              else [s.name for s in catalogue() if s.fat_tailed])
    log_mask = np.array([c in fat for c in nums])

    def signed_log(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=float).copy()
        a[:, log_mask] = np.sign(a[:, log_mask]) * np.log1p(np.abs(a[:, log_mask]))
        return a

    numeric = make_pipeline(FunctionTransformer(signed_log),
                            SimpleImputer(strategy="median", add_indicator=True,
                                          keep_empty_features=True),
                            StandardScaler())
    categorical = make_pipeline(
        FunctionTransformer(lambda a: pd.DataFrame(a).astype(object).where(pd.notna(a), "missing")),
        # Integer codes before the one-hot step: OneHotEncoder counts string values one by one in
        # Python, integer codes with numpy. The codes follow the sorted names, so the columns and
        # the grouping of rare values are those of the names; an unseen value becomes -1 and so
        # an all-zero row.
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
        # Rare values of a wide category share one column, which keeps the solver's
        # features-squared cost bounded.
        OneHotEncoder(handle_unknown="ignore", max_categories=MAX_ONE_HOT))
    pre = ColumnTransformer([("num", numeric, nums), ("cat", categorical, cats)])
    # Newton steps with a Cholesky solve: the same L2 optimum as lbfgs in far fewer iterations;
    # suited to many more rows than columns, as here.
    model = make_pipeline(pre, LogisticRegression(solver="newton-cholesky", max_iter=200, C=0.5))
    return model.fit(X, y)
