"""Churn definition, spells, observation dates and labels."""

from __future__ import annotations

import pandas as pd
import pytest

from features.contract import Tables, validate_tables
from features.labels import LabelSettings, account_spells
from features.rows import labelled_rows, scoring_rows


def subs(*rows: tuple[str, str, str | None]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["account_id", "start_date", "end_date"])
    return frame.assign(start_date=pd.to_datetime(frame.start_date),
                        end_date=pd.to_datetime(frame.end_date))


def test_renewal_within_grace_is_one_spell_and_not_churn() -> None:
    spells = account_spells(subs(("a", "2024-01-01", "2024-02-01"),
                                 ("a", "2024-02-20", None)), pd.Timestamp("2024-12-31"))
    assert len(spells) == 1 and pd.isna(spells.end[0]) and pd.isna(spells.churn_date[0])


def test_gap_longer_than_grace_is_churn_and_comeback_is_a_new_spell() -> None:
    spells = account_spells(subs(("a", "2024-01-01", "2024-02-01"),
                                 ("a", "2024-04-01", "2024-05-01")), pd.Timestamp("2024-12-31"),
                            grace_days=30)
    assert list(spells.churn_date) == [pd.Timestamp("2024-02-01"), pd.Timestamp("2024-05-01")]


def test_end_after_observed_until_is_censored_and_the_spell_runs_on() -> None:
    """A later end is a paid-through date: no churn, and the account is still active."""
    spells = account_spells(subs(("a", "2024-01-01", "2024-08-01"), ("b", "2024-01-01", "2024-07-01")),
                            pd.Timestamp("2024-07-01"))
    assert pd.isna(spells.churn_date[0]) and pd.isna(spells.end[0])
    assert spells.churn_date[1] == spells.end[1] == pd.Timestamp("2024-07-01")  # on the last day: known


def test_overlapping_subscriptions_merge() -> None:
    spells = account_spells(subs(("a", "2024-01-01", "2024-06-01"),
                                 ("a", "2024-02-01", "2024-03-01"),
                                 ("a", "2024-06-15", "2024-07-01")), pd.Timestamp("2024-12-31"))
    assert len(spells) == 1 and spells.churn_date[0] == pd.Timestamp("2024-07-01")


def _tables(subscriptions: pd.DataFrame) -> Tables:
    ids = sorted(subscriptions.account_id.unique())
    return validate_tables(Tables(pd.DataFrame({"account_id": ids}), subscriptions))


def test_labels_horizon_and_population() -> None:
    tables = _tables(subs(("churner", "2024-01-01", "2024-05-15"),
                          ("stayer", "2024-01-01", None),
                          ("late", "2024-04-10", None),
                          ("back", "2024-01-01", "2024-02-10"), ("back", "2024-05-01", None)))
    obs = labelled_rows(tables, LabelSettings(horizon_days=60),
                                observed_until="2024-09-01", first="2024-02-01")
    got = {(r.account_id, f"{r.as_of:%m-%d}"): r.churned for r in obs.itertuples()}
    # Dates run monthly while as_of + 60 days <= 09-01, i.e. up to 07-01.
    assert sorted({d for _, d in got}) == ["02-01", "03-01", "04-01", "05-01", "06-01", "07-01"]
    assert got[("churner", "03-01")] == 0  # 05-15 is 75 days later
    assert got[("churner", "04-01")] == 1 and got[("churner", "05-01")] == 1
    assert ("churner", "06-01") not in got  # churned before: not in the population
    assert ("late", "04-01") not in got and got[("late", "05-01")] == 0
    assert got[("back", "02-01")] == 1
    assert ("back", "03-01") not in got and ("back", "05-01") not in got  # starts on 05-01
    assert got[("back", "06-01")] == 0


def test_no_date_fits_gives_a_clear_error() -> None:
    tables = _tables(subs(("a", "2024-01-01", None)))
    with pytest.raises(ValueError, match="no observation date fits"):
        labelled_rows(tables, LabelSettings(horizon_days=365), observed_until="2024-06-01")


def test_scoring_rows_are_the_active_accounts() -> None:
    tables = _tables(subs(("a", "2024-01-01", None), ("b", "2024-01-01", "2024-03-01"),
                          ("c", "2024-06-01", None)))
    obs = scoring_rows(tables, ["2024-04-01"])
    assert list(obs.account_id) == ["a"] and obs.as_of[0] == pd.Timestamp("2024-04-01")


def test_label_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        LabelSettings(horizon_days=0)
