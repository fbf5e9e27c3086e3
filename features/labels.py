"""The churn definition: spells of subscriptions, churn dates and the label settings.

An account's subscriptions are merged into *spells*: subscriptions that follow each other within
the grace period belong to one spell. A spell that ends on or before ``observed_until`` (the last
day churn is known) with no subscription following within the grace period is a churn on its end
date. A later end is censored: in a billing export a running subscription's ``end_date`` is the
date it is paid through, so the spell is treated as still open. An account that comes back after
churning starts a new spell.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_HORIZON_DAYS = 90
DEFAULT_GRACE_DAYS = 30
#: Default history before the first observation date: the longest usage window ...
LOOKBACK_DAYS = 90
#: ... unless the data is then too short for a time split: then as little as this.
MIN_LOOKBACK_DAYS = 30


class LabelSettings(BaseModel):
    """How churn is labelled (a training config's ``label:`` section)."""

    model_config = ConfigDict(extra="forbid")
    horizon_days: int = Field(DEFAULT_HORIZON_DAYS, gt=0,
                              description="Churn within this many days after as_of")
    grace_days: int = Field(DEFAULT_GRACE_DAYS, ge=0, description="A gap up to this long "
                            "between subscriptions is not churn")
    frequency: str = Field("MS", description="pandas offset alias of the observation dates")
    first_date: date | None = Field(None, description="First observation date [default: 90 days "
                                    "after the data's activity starts, so usage windows are full]")
    check_churn_spike: bool = Field(True, description="Refuse labels whose newest date churns far "
                                    "more than the earlier ones (paid-through ends taken for "
                                    "churn); false keeps them deliberately")


def splits_in_time(dates: list[pd.Timestamp], horizon_days: int, test_dates: int = 2) -> bool:
    """Whether ``dates`` hold a training date, a validation date whose horizon starts after the
    training label's ends, and ``test_dates`` dates after the validation label's: the smallest
    time split without a label seeing a later part."""
    if not dates:
        return False
    horizon = pd.Timedelta(days=horizon_days)
    valid = [d for d in dates if d >= dates[0] + horizon]
    return bool(valid) and sum(d >= valid[0] + horizon for d in dates) >= test_dates


def account_spells(subscriptions: pd.DataFrame, observed_until: pd.Timestamp,
                   grace_days: int = DEFAULT_GRACE_DAYS) -> pd.DataFrame:
    """Merge subscriptions into spells and mark churn.

    Returns:
        One row per spell: ``account_id``, ``start``, ``end`` (NaT = open, also when it ends
        after ``observed_until``), ``churn_date`` (the end, when the spell churned).
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
    spells["end"] = spells["end"].where(spells["end"] <= observed_until)  # later: censored
    spells["churn_date"] = spells["end"]
    return spells.reset_index(drop=True)


def churned_within(churn_date: pd.Series, as_of: pd.Series, horizon_days: int) -> pd.Series:
    """The label: 1 where the churn date falls after as_of and within the horizon, else 0."""
    horizon = pd.Timedelta(days=horizon_days)
    return ((churn_date > as_of) & (churn_date <= as_of + horizon)).astype("int8")
