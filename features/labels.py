"""Churn definition, observation dates and labels.

An account's subscriptions are merged into *spells*: subscriptions that follow each other within
the grace period belong to one spell. A spell that ends on or before ``observed_until`` with no
subscription following within the grace period is a churn on its end date; later ends are censored
(we cannot know yet). An account that comes back after churning starts a new spell.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.contract import Tables

DEFAULT_HORIZON_DAYS = 90
DEFAULT_GRACE_DAYS = 30
#: Default history before the first observation date: the longest usage window.
LOOKBACK_DAYS = 90


@dataclass(frozen=True)
class LabelConfig:
    """How churn is labelled."""

    horizon_days: int = DEFAULT_HORIZON_DAYS
    grace_days: int = DEFAULT_GRACE_DAYS
    #: pandas offset alias of the observation dates ("MS" = first of every month).
    frequency: str = "MS"

    def __post_init__(self) -> None:
        if self.horizon_days <= 0:
            raise ValueError("horizon_days must be positive")
        if self.grace_days < 0:
            raise ValueError("grace_days must not be negative")


def account_spells(subscriptions: pd.DataFrame, observed_until: pd.Timestamp,
                   grace_days: int = DEFAULT_GRACE_DAYS) -> pd.DataFrame:
    """Merge subscriptions into spells and mark churn.

    Returns:
        One row per spell: ``account_id``, ``start``, ``end`` (NaT = open), ``churn_date``
        (NaT when the spell has not churned by ``observed_until``).
    """
    observed_until = pd.Timestamp(observed_until)
    subs = subscriptions[["account_id", "start_date", "end_date"]].sort_values(
        ["account_id", "start_date"], kind="stable").reset_index(drop=True)
    grace = pd.Timedelta(days=grace_days)
    # Running max of end dates per account (NaT = open = +infinity) decides whether the next
    # subscription continues the spell.
    far = pd.Timestamp("2262-01-01")
    end = subs["end_date"].fillna(far)
    running_end = end.groupby(subs["account_id"]).cummax()
    prev_end = running_end.groupby(subs["account_id"]).shift()
    new_spell = prev_end.isna() | (subs["start_date"] > prev_end + grace)
    spell_id = new_spell.cumsum()
    spells = subs.assign(end=end, spell=spell_id).groupby("spell").agg(
        account_id=("account_id", "first"), start=("start_date", "min"), end=("end", "max"))
    spells["end"] = spells["end"].where(spells["end"] < far)
    spells["churn_date"] = spells["end"].where(spells["end"] <= observed_until)
    return spells.reset_index(drop=True)


def observation_dates(first: pd.Timestamp, last: pd.Timestamp, frequency: str = "MS"
                      ) -> list[pd.Timestamp]:
    """Observation dates from ``first`` to ``last`` inclusive (e.g. the first of every month)."""
    return list(pd.date_range(pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize(),
                              freq=frequency))


def active_at(spells: pd.DataFrame, as_of: list[pd.Timestamp]) -> pd.DataFrame:
    """(account_id, as_of) for every account in a spell that started before and ends after as_of."""
    dates = pd.DataFrame({"as_of": pd.to_datetime(as_of).astype("datetime64[us]")})
    pairs = spells.merge(dates, how="cross")
    alive = (pairs["start"] < pairs["as_of"]) & (pairs["end"].isna() | (pairs["end"] > pairs["as_of"]))
    return pairs.loc[alive].reset_index(drop=True)


def training_observations(tables: Tables, config: LabelConfig = LabelConfig(),
                          observed_until: pd.Timestamp | str | None = None,
                          first: pd.Timestamp | str | None = None) -> pd.DataFrame:
    """Labelled observations: accounts active at each observation date, churned within horizon.

    Observation dates run from ``first`` (default: the first date at least ``LOOKBACK_DAYS`` after
    the data's activity starts, so that the usage windows are filled) to
    the last date whose horizon ends on or before ``observed_until`` (default:
    ``tables.observed_until()``, the mapping's choice or else the latest data date);
    later dates would have unobserved labels and are left out.

    Returns:
        ``account_id``, ``as_of``, ``churned`` (0/1) and ``churn_date``, sorted by as_of, account.
    """
    observed_until = (tables.observed_until() if observed_until is None
                      else pd.Timestamp(observed_until).normalize())
    spells = account_spells(tables.subscriptions, observed_until, config.grace_days)
    if first is None:
        first = tables.activity_start() + pd.Timedelta(days=LOOKBACK_DAYS)
    last = observed_until - pd.Timedelta(days=config.horizon_days)
    dates = observation_dates(pd.Timestamp(first), last, config.frequency)
    if not dates:
        raise ValueError(
            f"no observation date fits: the first is {pd.Timestamp(first):%Y-%m-%d} and the last "
            f"whose {config.horizon_days}-day horizon is observed is {last:%Y-%m-%d} "
            f"(observed_until {observed_until:%Y-%m-%d}); use a shorter horizon or more data")
    obs = active_at(spells, dates)
    horizon = pd.Timedelta(days=config.horizon_days)
    obs["churned"] = ((obs["churn_date"] > obs["as_of"])
                      & (obs["churn_date"] <= obs["as_of"] + horizon)).astype("int8")
    out = obs[["account_id", "as_of", "churned", "churn_date"]]
    return out.sort_values(["as_of", "account_id"], kind="stable").reset_index(drop=True)


def scoring_observations(tables: Tables, as_of: pd.Timestamp | str,
                         grace_days: int = DEFAULT_GRACE_DAYS) -> pd.DataFrame:
    """(account_id, as_of) for every account active at ``as_of`` (no label: the future is unknown)."""
    as_of = pd.Timestamp(as_of).normalize()
    spells = account_spells(tables.subscriptions, as_of, grace_days)
    obs = active_at(spells, [as_of])
    return obs[["account_id", "as_of"]].sort_values("account_id").reset_index(drop=True)
