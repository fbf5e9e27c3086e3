"""The survey rules: NPS buckets, the CSAT x NPS quadrant, when a survey is due, and the
portfolio's quadrant alarms. Pure functions over columns, used by the feature builder (on the
rows it computes), the scoring API and the score store's portfolio alike.

NPS buckets: detractor 0-6, passive 7-8, promoter 9-10.

Quadrant (NPS = loyalty to the company, CSAT = satisfaction with the service received):

============  ===============  ====================  =================================================
quadrant      latest NPS       CSAT satisfied share  playbook
============  ===============  ====================  =================================================
Advocate      >= nps_high      >= csat_high          ask for references and case studies
VIP-support   >= nps_high      <  csat_high          loyal but badly served: fix their support first
Wildcard      <  nps_high      >= csat_high          served well but not loyal: could go either way
Churner       <  nps_high      <  csat_high          act now
============  ===============  ====================  =================================================

An account without both answers has no quadrant.

Survey due (the NPS cadence): an account is resurveyed every ``cadence_days`` and first surveyed
``onboarding_days`` after it became a customer. Both are decided on the days since an NPS survey
was last *sent* (answered or not) and the tenure:

* ``nps_survey_due``: a customer for at least ``cadence_days`` who was sent no NPS survey in the
  last ``cadence_days``;
* ``onboarding_survey_due``: a customer for ``onboarding_days`` to ``cadence_days`` who was never
  sent an NPS survey since becoming a customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

NPS_BUCKETS = ("detractor", "passive", "promoter")
QUADRANTS = ("Advocate", "VIP-support", "Wildcard", "Churner")
#: The reasons an account is due a survey, named like the catalogue's flags.
NPS_DUE = "nps_survey_due"
ONBOARDING_DUE = "onboarding_survey_due"
#: Portfolio alarms: share of accounts in a quadrant above which the playbook says act.
CHURNER_ALARM = 0.05
WILDCARD_ALARM = 0.80


@dataclass(frozen=True)
class SurveyPolicy:
    """Thresholds of the quadrant and the survey cadence (the defaults are the playbook's)."""

    nps_high: float = 7.0
    csat_high: float = 0.5
    cadence_days: int = 180
    onboarding_days: int = 14


DEFAULT_POLICY = SurveyPolicy()


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def nps_buckets(nps: Any) -> np.ndarray:
    """Bucket of each NPS answer (None when missing), as an object array."""
    nps = _floats(nps)
    out = np.full(len(nps), None, dtype=object)
    out[nps >= 0] = NPS_BUCKETS[0]
    out[nps >= 7] = NPS_BUCKETS[1]
    out[nps >= 9] = NPS_BUCKETS[2]
    return out


def quadrants(nps: Any, csat_share: Any, policy: SurveyPolicy = DEFAULT_POLICY) -> np.ndarray:
    """Quadrant of each account (None when the NPS or the CSAT share is missing)."""
    nps, csat = _floats(nps), _floats(csat_share)
    idx = np.where(nps >= policy.nps_high, np.where(csat >= policy.csat_high, 0, 1),
                   np.where(csat >= policy.csat_high, 2, 3))
    out = np.array(QUADRANTS, dtype=object)[idx]
    out[np.isnan(nps) | np.isnan(csat)] = None
    return out


def nps_survey_due(days_since_nps_sent: Any, tenure_days: Any,
                   policy: SurveyPolicy = DEFAULT_POLICY) -> np.ndarray:
    """1.0 where the NPS resurvey is due, 0.0 where not, NaN without a tenure."""
    since, tenure = _floats(days_since_nps_sent), _floats(tenure_days)
    # A survey sent exactly cadence_days before as_of is inside the window [as_of - cadence, as_of).
    due = (tenure >= policy.cadence_days) & (np.isnan(since) | (since > policy.cadence_days))
    return np.where(np.isnan(tenure), np.nan, due.astype(np.float64))


def onboarding_survey_due(days_since_nps_sent: Any, tenure_days: Any,
                          policy: SurveyPolicy = DEFAULT_POLICY) -> np.ndarray:
    """1.0 where the onboarding survey is due, 0.0 where not, NaN without a tenure."""
    since, tenure = _floats(days_since_nps_sent), _floats(tenure_days)
    never = np.isnan(since) | (since > tenure)  # nothing sent since becoming a customer
    due = never & (tenure >= policy.onboarding_days) & (tenure < policy.cadence_days)
    return np.where(np.isnan(tenure), np.nan, due.astype(np.float64))


def survey_due_reasons(days_since_nps_sent: Any, tenure_days: Any,
                       policy: SurveyPolicy = DEFAULT_POLICY) -> list[list[str]]:
    """Why each account is due a survey (empty list = not due, or no tenure to judge by)."""
    nps = nps_survey_due(days_since_nps_sent, tenure_days, policy) > 0
    onboarding = onboarding_survey_due(days_since_nps_sent, tenure_days, policy) > 0
    return [([NPS_DUE] if a else []) + ([ONBOARDING_DUE] if b else [])
            for a, b in zip(nps.tolist(), onboarding.tolist(), strict=True)]


def quadrant_alarms(quadrant_counts: Mapping[str, int], accounts: int,
                    churner: float = CHURNER_ALARM, wildcard: float = WILDCARD_ALARM
                    ) -> list[dict[str, Any]]:
    """The playbook's alarms: Churners above ``churner`` and Wildcards above ``wildcard``.

    The CSAT x NPS map covers only accounts with both answers, so the shares are of those
    (``mapped``), and each alarm states that denominator and the coverage (``mapped`` of all
    ``accounts``). With no account on the map there is nothing to alarm on: no alarms.
    """
    mapped = sum(int(quadrant_counts.get(q, 0)) for q in QUADRANTS)
    if mapped == 0:
        return []
    coverage = mapped / accounts if accounts else 0.0
    out = []
    for quadrant, threshold in (("Churner", churner), ("Wildcard", wildcard)):
        count = int(quadrant_counts.get(quadrant, 0))
        share = count / mapped
        out.append({"name": f"{quadrant.lower()}s_above_{threshold:.0%}".replace("%", "pct"),
                    "quadrant": quadrant, "accounts": count, "mapped_accounts": mapped,
                    "share": round(share, 4), "coverage": round(coverage, 4),
                    "threshold": threshold, "firing": share > threshold,
                    "message": f"{count:,} of the {mapped:,} accounts with both an NPS and a "
                               f"CSAT answer ({share:.1%}) are {quadrant}s (alarm above "
                               f"{threshold:.0%}); {coverage:.0%} of the {accounts:,} accounts "
                               "have both answers"})
    return out
