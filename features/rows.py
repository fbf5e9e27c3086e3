"""Which (account, date) rows exist: observation dates, the accounts active at each, their labels.

One rule decides which accounts get a row at a date (:func:`active_rows`): those in a spell of
subscriptions (:mod:`features.labels`) that started before the date and ends after it. Training
rows (past dates, labelled with churn within the horizon) and scoring rows (a date without a
label) both come from it, and :func:`feature_rows` adds the point-in-time features to either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from features.contract import Tables
from features.labels import (
    DEFAULT_GRACE_DAYS,
    LOOKBACK_DAYS,
    MIN_LOOKBACK_DAYS,
    LabelSettings,
    account_spells,
    churned_within,
    splits_in_time,
)
from features.pointintime import KEYS, build_features

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: ``--every`` choices: pandas offset aliases of the observation dates.
FREQUENCIES = {"month": "MS", "week": "W-MON", "quarter": "QS"}


def grace_days_for(tables: Tables, grace_days: int | None = None) -> int:
    """The grace period: the one given, else the data set's churn definition's, else 30 days."""
    if grace_days is not None:
        return grace_days
    return tables.churn.grace_days if tables.churn.grace_days is not None else DEFAULT_GRACE_DAYS


#: The newest labelled date's churn rate is implausible at or above this and this many times the
#: earlier dates' median (subscription ends near the extract date taken for churn).
SPIKE_RATE = 0.25
SPIKE_FACTOR = 4.0


class LabelError(ValueError):
    """The labels cannot be right; the message names the likely cause and the fix."""


def default_scoring_date(tables: Tables) -> pd.Timestamp:
    """The date scoring rows are built for when none is given: the day after the extract date,
    so every row of the data counts."""
    return tables.extract_date().date + pd.Timedelta(days=1)


def observation_dates(first: pd.Timestamp, last: pd.Timestamp, frequency: str = "MS"
                      ) -> list[pd.Timestamp]:
    """Observation dates from ``first`` to ``last`` inclusive (e.g. the first of every month)."""
    return list(pd.date_range(pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize(),
                              freq=frequency))


def dates_for(tables: Tables, as_of: Iterable[object] | None = None, every: str | None = None
              ) -> list[pd.Timestamp]:
    """The dates to build: ``as_of`` dates, or every month/week/quarter over the data, or (neither)
    :func:`default_scoring_date`."""
    if every is not None:
        if every not in FREQUENCIES:
            raise ValueError(f"every must be one of {', '.join(FREQUENCIES)}, not {every!r}")
        return observation_dates(tables.activity_start(), tables.extract_date().date,
                                 FREQUENCIES[every])
    if as_of is not None:
        dates = [pd.Timestamp(d).normalize() for d in as_of]
        if not dates:
            raise ValueError("no observation date given")
        return dates
    return [default_scoring_date(tables)]


def active_rows(tables: Tables, dates: Iterable[object], grace_days: int,
                observed_until: pd.Timestamp | None = None) -> pd.DataFrame:
    """``account_id``, ``as_of`` and ``churn_date`` (NaT = none by ``observed_until``) of every
    account in a spell that started before ``as_of`` and ends after it, sorted by date, account.

    ``observed_until`` (default: ``tables.observed_until()``) is the last day churn is known;
    spells ending later are still running (:func:`features.labels.account_spells`).
    """
    as_of = pd.DatetimeIndex([pd.Timestamp(d).normalize() for d in dates]).astype("datetime64[us]")
    observed = tables.observed_until() if observed_until is None else pd.Timestamp(observed_until)
    spells = account_spells(tables.subscriptions, observed, grace_days)
    pairs = spells.merge(pd.DataFrame({"as_of": as_of}), how="cross")
    alive = (pairs["start"] < pairs["as_of"]) & (pairs["end"].isna() | (pairs["end"] > pairs["as_of"]))
    rows = pairs.loc[alive, ["account_id", "as_of", "churn_date"]]
    return rows.sort_values(["as_of", "account_id"], kind="stable").reset_index(drop=True)


def scoring_rows(tables: Tables, dates: Iterable[object] | None = None,
                 grace_days: int | None = None) -> pd.DataFrame:
    """(``account_id``, ``as_of``) of every account active at each date (default:
    :func:`default_scoring_date`); no label: the future is unknown."""
    dates = list(dates) if dates is not None else [default_scoring_date(tables)]
    rows = active_rows(tables, dates, grace_days_for(tables, grace_days))[KEYS]
    if rows.empty:
        subs = tables.subscriptions
        shown = ", ".join(f"{pd.Timestamp(d):%Y-%m-%d}" for d in dates[:5])
        raise ValueError(
            f"no account is active on {shown}: the data's subscriptions start "
            f"{subs['start_date'].min():%Y-%m-%d} .. {subs['start_date'].max():%Y-%m-%d} and its "
            f"extract date is {tables.extract_date()}")
    return rows


def labelled_rows(tables: Tables, label: LabelSettings,
                  observed_until: pd.Timestamp | str | None = None,
                  first: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Training rows: accounts active at each observation date, churned within the horizon.

    Observation dates run every ``label.frequency`` from ``first`` (default ``label.first_date``,
    else the first date at least ``LOOKBACK_DAYS`` after the data's activity starts, so that the
    usage windows are filled; on data too short for a time split that way, as early as
    ``MIN_LOOKBACK_DAYS`` after it) to the last date whose horizon ends on or before
    ``observed_until``
    (default: ``tables.observed_until()``, the mapping's choice or else the latest data date);
    later dates would have unobserved labels and are left out.

    Returns:
        ``account_id``, ``as_of``, ``churned`` (0/1) and ``churn_date``, sorted by as_of, account.
    """
    observed = (tables.observed_until() if observed_until is None
                else pd.Timestamp(observed_until).normalize())
    first = first if first is not None else label.first_date
    last = observed - pd.Timedelta(days=label.horizon_days)
    if first is None:
        start = tables.activity_start()
        first = start + pd.Timedelta(days=LOOKBACK_DAYS)
        if not splits_in_time(observation_dates(first, last, label.frequency), label.horizon_days):
            first = start + pd.Timedelta(days=MIN_LOOKBACK_DAYS)
    dates = observation_dates(pd.Timestamp(first), last, label.frequency)
    if not dates:
        raise ValueError(
            f"no observation date fits: the first is {pd.Timestamp(first):%Y-%m-%d} and the last "
            f"whose {label.horizon_days}-day horizon is observed is {last:%Y-%m-%d} "
            f"(observed_until {observed:%Y-%m-%d}); use a shorter horizon or more data")
    rows = active_rows(tables, dates, label.grace_days, observed)
    rows.insert(2, "churned", churned_within(rows["churn_date"], rows["as_of"], label.horizon_days))
    if label.check_churn_spike:
        check_churn_spike(tables, rows, observed)
    return rows


def churn_rates(rows: pd.DataFrame) -> pd.Series:
    """Churn rate of labelled rows per observation date."""
    return rows.groupby("as_of")["churned"].mean()


def check_churn_spike(tables: Tables, rows: pd.DataFrame, observed_until: pd.Timestamp) -> None:
    """Refuse labels whose newest date churns far more than the earlier dates: the usual sign
    that running subscriptions' paid-through ends were taken for churn."""
    rates = churn_rates(rows)
    if len(rates) < 3:
        return
    newest, earlier = rates.iloc[-1], float(rates.iloc[:-1].median())
    if newest >= SPIKE_RATE and newest >= SPIKE_FACTOR * earlier:
        raise LabelError(
            f"the churn rate on the newest labelled date, {rates.index[-1]:%Y-%m-%d}, is "
            f"{newest:.1%} against {earlier:.1%} (median) on the earlier dates. Subscription ends "
            f"shortly before {observed_until:%Y-%m-%d} (the last day churn is taken as known) "
            "were counted as churn; in a billing export they are usually running subscriptions' "
            f"paid-through dates. The extract date was taken as {tables.extract_date()}. Set the "
            "last day churn is known (`observed_until` in the mapping's churn section, or "
            "--observed-until), or the mapping's `extract_date`.")


def feature_rows(tables: Tables, as_of: Iterable[object] | None = None, every: str | None = None,
                 horizon_days: int | None = None, grace_days: int | None = None, *,
                 spark: SparkSession | None = None) -> pd.DataFrame:
    """Features for every account active at each date, keyed by (``account_id``, ``as_of``).

    With ``horizon_days`` the rows also get their label (``churned`` within the horizon, 0/1) and
    dates whose horizon is not observed yet are dropped: training rows. Without it: scoring rows.
    ``grace_days`` defaults to the data set's churn definition, else 30. With ``spark`` the
    features are built on that SparkSession (:func:`~features.pointintime.build_features`).
    """
    grace = grace_days_for(tables, grace_days)
    dates = dates_for(tables, as_of, every)
    if horizon_days is None:
        return build_features(tables, scoring_rows(tables, dates, grace), spark=spark)
    label = LabelSettings(horizon_days=horizon_days, grace_days=grace)
    labelled = labelled_rows(tables, label, first=min(dates))
    labelled = labelled[labelled.as_of.isin(pd.DatetimeIndex(dates))].reset_index(drop=True)
    feats = build_features(tables, labelled[KEYS], spark=spark)
    feats["churned"] = labelled["churned"].to_numpy()
    return feats
