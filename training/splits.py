"""Time-based splits over observation dates: train, validation and test folds, and the rolling-origin
backtest. Never split over rows: accounts repeat across dates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Fold:
    """Masks of one time-based split: train, validation (early stopping, calibration) and test."""

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def dates(self, as_of: pd.Series, mask: np.ndarray) -> list[str]:
        return sorted(f"{d:%Y-%m-%d}" for d in as_of[mask].unique())


def _before(as_of: pd.Series, first: pd.Timestamp, horizon_days: int) -> np.ndarray:
    """Rows whose label horizon ends on or before ``first`` (their labels cannot see it)."""
    return (as_of + pd.Timedelta(days=horizon_days) <= first).to_numpy()


def time_fold(as_of: pd.Series, test_dates: list[pd.Timestamp], horizon_days: int,
              validation_dates: int = 1, name: str = "") -> Fold:
    """Train / validation / test masks for testing on ``test_dates``.

    Validation is the latest ``validation_dates`` dates whose labels close before the first test
    date; training is the dates whose labels close before the first validation date. No label of
    an earlier part looks into a later one, and an account never trains on a date it is tested on.
    """
    first_test = min(pd.Timestamp(d) for d in test_dates)
    test = as_of.isin(pd.to_datetime(test_dates)).to_numpy()
    usable = _before(as_of, first_test, horizon_days)
    before = np.sort(as_of[usable].unique())
    if len(before) < validation_dates + 1:
        raise ValueError(f"testing on {first_test:%Y-%m-%d} leaves {len(before)} earlier "
                         f"observation dates whose {horizon_days}-day horizon has closed; need at "
                         f"least {validation_dates + 1} (validation + training): use more data, a "
                         "shorter horizon or fewer test dates")
    valid_dates = pd.to_datetime(before[-validation_dates:])
    valid = as_of.isin(valid_dates).to_numpy()
    train = _before(as_of, valid_dates.min(), horizon_days)
    if not train.any():
        raise ValueError(f"no training dates end their {horizon_days}-day horizon before the "
                         f"validation date {valid_dates.min():%Y-%m-%d}; use more data or a "
                         "shorter horizon")
    return Fold(name or f"{first_test:%Y-%m-%d}", train, valid, test)


def holdout_fold(as_of: pd.Series, test_dates: int, horizon_days: int,
                 validation_dates: int = 1) -> Fold:
    """The main split: the latest ``test_dates`` observation dates are the test window."""
    dates = np.sort(as_of.unique())
    if len(dates) < test_dates + 2:
        raise ValueError(f"need at least {test_dates + 2} observation dates (training, validation "
                         f"and {test_dates} test), found {len(dates)}")
    return time_fold(as_of, list(pd.to_datetime(dates[-test_dates:])), horizon_days,
                     validation_dates, name="holdout")


def backtest_folds(as_of: pd.Series, folds: int, horizon_days: int, validation_dates: int = 1,
                   before: pd.Timestamp | None = None) -> list[Fold]:
    """Rolling-origin folds: each of the latest ``folds`` dates (before ``before`` if given) is
    a test date, trained on the dates whose labels close before it. Dates too early to leave
    training data are skipped."""
    dates = [pd.Timestamp(d) for d in np.sort(as_of.unique())]
    if before is not None:
        dates = [d for d in dates if d < before]
    out = []
    for date in dates[-folds:] if folds else []:
        try:
            out.append(time_fold(as_of, [date], horizon_days, validation_dates))
        except ValueError:
            continue
    return out
