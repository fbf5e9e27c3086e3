"""Training set assembly, time-based split, the LightGBM churn model and its baseline."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from features.builder import build_features
from features.contract import Tables
from features.definitions import CATALOGUE, categorical_features, feature_names
from features.labels import training_observations
from features.modelframe import FeatureEncoder
from training.config import LightGBMSettings, TrainConfig

LABEL = "churned"


@dataclass
class TrainingSet:
    """Labelled feature rows keyed by (account_id, as_of)."""

    frame: pd.DataFrame
    feature_names: list[str]
    observed_until: pd.Timestamp

    @property
    def X(self) -> pd.DataFrame:  # noqa: N802 - the usual name for a feature matrix
        return self.frame[self.feature_names]

    @property
    def y(self) -> np.ndarray:
        return self.frame[LABEL].to_numpy()


def build_training_set(tables: Tables, config: TrainConfig,
                       observed_until: pd.Timestamp | str | None = None) -> TrainingSet:
    """Observation dates, labels and point-in-time features for every active account."""
    observed = (tables.latest_date() if observed_until is None
                else pd.Timestamp(observed_until).normalize())
    obs = training_observations(tables, config.label.to_label_config(), observed)
    feats = build_features(tables, obs[["account_id", "as_of"]])
    frame = pd.concat([feats, obs[[LABEL]].reset_index(drop=True)], axis=1)
    return TrainingSet(frame, feature_names(), observed)


def time_split(as_of: pd.Series, test_dates: int, horizon_days: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Masks for (train, test): the latest ``test_dates`` dates are the test set.

    Training keeps only dates whose label horizon ends on or before the first test date, so no
    training label looks into the test period.
    """
    dates = np.sort(as_of.unique())
    if len(dates) < test_dates + 1:
        raise ValueError(f"need more than {test_dates} observation dates for a time split, "
                         f"found {len(dates)}")
    first_test = pd.Timestamp(dates[-test_dates])
    test = (as_of >= first_test).to_numpy()
    train = (as_of + pd.Timedelta(days=horizon_days) <= first_test).to_numpy()
    if not train.any():
        raise ValueError(f"no training dates end their {horizon_days}-day horizon before the "
                         f"first test date {first_test:%Y-%m-%d}; use more data or a shorter horizon")
    return train, test


class ChurnModel:
    """LightGBM on the encoded feature matrix; ``predict_proba`` returns churn probabilities."""

    def __init__(self, params: LightGBMSettings | None = None,
                 feature_names: list[str] | None = None,
                 categorical: list[str] | None = None):
        self.params = params or LightGBMSettings()
        self.feature_names = feature_names
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> ChurnModel:  # noqa: N803
        names = self.feature_names or list(X.columns)
        cats = [c for c in (self.categorical if self.categorical is not None
                            else categorical_features()) if c in names]
        self.encoder_ = FeatureEncoder(names, cats).fit(X)
        data = lgb.Dataset(self.encoder_.transform(X), label=np.asarray(y), feature_name=names,
                           categorical_feature=self.encoder_.categorical_indices,
                           free_raw_data=False)
        self.booster_ = lgb.train(self.params.params(), data,
                                  num_boost_round=self.params.num_boost_round)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Churn probability per row."""
        return self.booster_.predict(self.encoder_.transform(X))

    def feature_importance(self) -> pd.Series:
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.Series(gain, index=self.encoder_.feature_names).sort_values(ascending=False)


def baseline_logistic(X: pd.DataFrame, y: np.ndarray) -> Pipeline:  # noqa: N803
    """Logistic regression on the same features: log1p on fat-tailed counts, median imputation
    with missing indicators, one-hot categoricals."""
    cats = [c for c in categorical_features() if c in X.columns]
    nums = [c for c in X.columns if c not in cats]
    fat = {s.name for s in CATALOGUE if s.fat_tailed}
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
        OneHotEncoder(handle_unknown="ignore"))
    pre = ColumnTransformer([("num", numeric, nums), ("cat", categorical, cats)])
    model = make_pipeline(pre, LogisticRegression(max_iter=2000, C=0.5))
    return model.fit(X, y)
