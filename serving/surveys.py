"""The CSAT x NPS quadrant and the survey-due flags of each account: pure functions over columns.

Quadrant (NPS = loyalty to the company, CSAT = satisfaction with the service received):

============  ===============  ===================  ==================================================
quadrant      latest NPS       CSAT satisfied share  playbook
============  ===============  ===================  ==================================================
Advocate      >= nps_high      >= csat_high          ask for references and case studies
VIP-support   >= nps_high      <  csat_high          loyal but badly served: fix their support first
Wildcard      <  nps_high      >= csat_high          served well but not loyal: could go either way
Churner       <  nps_high      <  csat_high          act now
============  ===============  ===================  ==================================================

An account without both answers has no quadrant (null). When the feature catalogue provides the
quadrant or survey-due flags as features (``csat_nps_quadrant``, ``survey_due_*``) and the caller
sends them, those values are used as sent; otherwise they are derived here from ``last_nps``,
``csat_satisfied_share_180d``, ``days_since_last_survey`` and ``tenure_days``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.definitions import CATALOGUE

QUADRANTS = ("Advocate", "VIP-support", "Wildcard", "Churner")
#: Catalogue features that carry the quadrant / survey-due flags, when the catalogue has them.
QUADRANT_FEATURES = tuple(s.name for s in CATALOGUE if "quadrant" in s.name)
SURVEY_DUE_FEATURES = tuple(s.name for s in CATALOGUE if "survey_due" in s.name)

#: Reasons, named like the catalogue's flags.
OVERDUE = "nps_survey_due"
ONBOARDING = "onboarding_survey_due"


@dataclass(frozen=True)
class SurveyPolicy:
    """Thresholds of the quadrant and of the survey-due flags (``ServingSettings`` sets them)."""

    nps_high: float = 7.0
    csat_high: float = 0.5
    due_days: int = 180
    onboarding_days: int = 14


def quadrants(nps: np.ndarray, csat_share: np.ndarray, policy: SurveyPolicy = SurveyPolicy()
              ) -> list[str | None]:
    """Quadrant of each account (None when the NPS or the CSAT share is missing)."""
    nps = np.asarray(nps, dtype=np.float64)
    csat = np.asarray(csat_share, dtype=np.float64)
    loyal = nps >= policy.nps_high
    satisfied = csat >= policy.csat_high
    known = ~(np.isnan(nps) | np.isnan(csat))
    idx = np.where(loyal, np.where(satisfied, 0, 1), np.where(satisfied, 2, 3))
    return [QUADRANTS[k] if ok else None for k, ok in zip(idx.tolist(), known.tolist(), strict=True)]


def survey_due(days_since_survey: np.ndarray, tenure_days: np.ndarray,
               policy: SurveyPolicy = SurveyPolicy()) -> list[list[str]]:
    """Why each account is due a survey (empty list = not due).

    * ``nps_survey_due``: last survey N or more days ago, or never surveyed in N days of
      tenure;
    * ``onboarding_survey_due``: never surveyed, customer for at least ``onboarding_days``
      but less than N days.
    """
    since = np.asarray(days_since_survey, dtype=np.float64)
    tenure = np.asarray(tenure_days, dtype=np.float64)
    never = np.isnan(since)
    overdue = (~never & (since >= policy.due_days)) | (never & (tenure >= policy.due_days))
    onboarding = never & (tenure >= policy.onboarding_days) & (tenure < policy.due_days)
    return [([OVERDUE] if o else []) + ([ONBOARDING] if b else [])
            for o, b in zip(overdue.tolist(), onboarding.tolist(), strict=True)]


def survey_fields(n: int, columns: Mapping[str, np.ndarray],
                  sent: Callable[[str], Sequence[Any] | None], policy: SurveyPolicy
                  ) -> tuple[list[str | None], list[list[str]]]:
    """Quadrant and survey-due reasons of ``n`` accounts: catalogue features when sent, else
    derived.

    ``columns`` holds the numeric features as float arrays (NaN = not sent), so the survey-due
    flags are read from there (a flag above 0 = due); the quadrant, a category, from ``sent(name)``:
    the values sent for a feature, None when the request did not send it at all.
    """
    nan = np.full(n, np.nan)
    quads = quadrants(columns.get("last_nps", nan),
                      columns.get("csat_satisfied_share_180d", nan), policy)
    due = survey_due(columns.get("days_since_last_survey", nan), columns.get("tenure_days", nan),
                     policy)
    flags = [(name, np.asarray(columns[name], dtype=np.float64))
             for name in SURVEY_DUE_FEATURES if name in columns]
    if flags:
        given = np.zeros(n, dtype=bool)
        for _, flag in flags:
            given |= ~np.isnan(flag)
        for i in np.flatnonzero(given).tolist():
            due[i] = [name for name, flag in flags if flag[i] > 0]
    for name in QUADRANT_FEATURES:
        for i, value in enumerate(sent(name) or ()):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                quads[i] = str(value)
    return quads, due
