"""``--tune N``: Optuna search of the LightGBM hyperparameters on the rolling-origin backtest.

The objective is the mean ROC AUC over backtest folds whose test dates come *before* the held-out
test window, so tuning never sees the dates the final model is judged (and gated) on.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from training.config import TrainConfig
from training.dataset import TrainingSet
from training.model import ChurnModel
from training.splits import backtest_folds


def tune_lightgbm(ts: TrainingSet, config: TrainConfig, trials: int, *, before: pd.Timestamp,
                  show_progress: bool = False) -> optuna.Study:
    """Run ``trials`` Optuna (TPE, seeded) trials; ``study.best_params`` are LightGBM settings."""
    s = config.split
    folds = backtest_folds(ts.frame["as_of"], max(s.backtest_folds, 2), config.label.horizon_days,
                           s.validation_dates, before=before)
    if not folds:
        raise ValueError(f"no backtest fold fits before the test window ({before:%Y-%m-%d}); "
                         "tuning needs more observation dates")
    X, y = ts.X, ts.y  # noqa: N806

    def objective(trial: optuna.Trial) -> float:
        params = config.lightgbm.model_copy(update={
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
            "max_depth": trial.suggest_int("max_depth", 3, 10),
            "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        })
        aucs = []
        for fold in folds:
            model = ChurnModel(params, categorical=ts.categorical).fit(
                X[fold.train], y[fold.train], eval_set=(X[fold.valid], y[fold.valid]))
            if len(np.unique(y[fold.test])) == 2:
                aucs.append(roc_auc_score(y[fold.test], model.predict_proba(X[fold.test])))
        return float(np.mean(aucs)) if aucs else float("nan")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=config.lightgbm.seed))
    study.optimize(objective, n_trials=trials, show_progress_bar=show_progress)
    return study
