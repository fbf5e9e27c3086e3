"""Scoring a batch of accounts: churn probability, reasons, risk band, the blended health score,
the CSAT x NPS quadrant and the survey-due flags.

Everything is vectorised over the batch: the accounts, as records or column by column
(:class:`AccountColumns`), are encoded once by :meth:`LoadedModel.encode` or
:meth:`LoadedModel.encode_columns` (the codes of :meth:`FeatureEncoder.transform_records`, no
pandas, so one account costs little more than one LightGBM row), the booster predicts all rows in
one call and the health components come from :func:`features.health.component_scores` and
:func:`features.health.blend` on whole columns. The bands, the quadrant and the survey-due rules
are those of :mod:`features.health` and :mod:`features.surveys`, which the feature builder uses.

With reasons, TreeSHAP runs once (:meth:`LoadedModel.contributions`: the tables of
:mod:`serving.treeshap`, or LightGBM's ``pred_contrib``): the contributions sum to the raw score,
from which the probability follows, so explaining costs one call, not two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features import surveys
from features.definitions import CATALOGUE, Rule
from features.health import (
    COMPONENTS,
    DEFAULT_HEALTH_BANDS,
    DEFAULT_RISK_BANDS,
    DEFAULT_WEIGHTS,
    band_labels,
    blend,
    component_scores,
)
from features.surveys import DEFAULT_POLICY, SurveyPolicy
from serving.explain import Explainer
from serving.model import LoadedModel

#: Numeric catalogue features: the inputs of the rule-based health components and survey rules.
NUMERIC_FEATURES = tuple(spec.name for spec in CATALOGUE if spec.dtype != "category")
#: The catalogue feature that carries the quadrant.
QUADRANT_FEATURE = next(s.name for s in CATALOGUE
                        if isinstance(s.compute, Rule) and s.compute.function is surveys.quadrants)

#: The health components, as the literal dicts of :func:`score_accounts` spell them.
_COMPONENT_KEYS = ("usage", "engagement", "sentiment", "risk")
assert set(_COMPONENT_KEYS) == set(COMPONENTS), "score_accounts spells out the components"

#: One account to score: its id and its ``{feature: value}`` record (absent or None = missing).
AccountInput = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class AccountColumns:
    """Accounts sent column by column: ``ids`` and ``{feature: one value per id}`` (None =
    missing; a feature not in ``values`` is missing for every account). Big batches arrive this
    way without a dict per account, which is most of what a batch of records costs to parse."""

    ids: Sequence[str]
    values: Mapping[str, Sequence[Any]]

    def __len__(self) -> int:
        return len(self.ids)

    def record(self, i: int) -> dict[str, Any]:
        """The ``{feature: value}`` record of the ``i``-th account."""
        return {name: column[i] for name, column in self.values.items()}

    def records(self) -> list[AccountInput]:
        """The accounts as ``(account_id, record)`` pairs."""
        return [(account_id, self.record(i)) for i, account_id in enumerate(self.ids)]


@dataclass(frozen=True)
class Bands:
    """Lower bounds of the risk bands (on the probability) and health bands (on 0-100)."""

    risk: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RISK_BANDS))
    health: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_HEALTH_BANDS))


@dataclass(slots=True)
class AccountScore:
    """The score of one account."""

    account_id: str
    #: Probability that the account churns within the model's horizon (not a label).
    churn_probability: float
    risk_band: str
    #: 0-100, 100 = healthiest; None only when no weighted component has data.
    health_score: float | None
    health_band: str | None
    #: Component scores 0-100 (None = no data for that component).
    components: dict[str, float | None]
    #: Weight actually applied to each component for this account (sums to 1).
    weights: dict[str, float]
    #: Model features the caller did not send (or sent as null).
    missing_features: list[str]
    components_without_data: list[str]
    #: The model's raw score (log-odds, before the sigmoid and any calibration).
    raw_score: float = math.nan
    #: Top reasons (see :mod:`serving.explain`); None when not asked for.
    reasons: list[dict[str, Any]] | None = None
    #: Sum of the contributions not in ``reasons`` plus the model's expected value (log-odds).
    reasons_rest: float | None = None
    #: How missing components changed the weights, in words (None when nothing was missing).
    health_note: str | None = None
    #: CSAT x NPS quadrant (Advocate, VIP-support, Wildcard, Churner) or None without both.
    quadrant: str | None = None
    #: Why the account is due a survey (empty = not due).
    survey_due_reasons: list[str] = field(default_factory=list)

    @property
    def survey_due(self) -> bool:
        return bool(self.survey_due_reasons)


def revenue_at_risk(mrr: float | None, churn_probability: float) -> float | None:
    """Revenue at risk: the annualised mrr (12 x mrr) times the probability that the account
    churns within the model's horizon, i.e. the yearly revenue the portfolio expects to lose from
    this account (None without an mrr). The one definition the store, API and console use."""
    if mrr is None or mrr != mrr:
        return None
    return 12.0 * float(mrr) * float(churn_probability)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _health_columns(model: LoadedModel, matrix: np.ndarray,
                    sent: Callable[[str], Sequence[Any] | None]) -> dict[str, np.ndarray]:
    """Numeric feature columns for the health rules, reusing the encoded matrix where possible
    (``sent(name)``: the values sent for a feature the model does not take, or None)."""
    columns: dict[str, np.ndarray] = {}
    categorical = model.encoder.categories_
    n = len(matrix)
    for name in NUMERIC_FEATURES:
        if name in model.not_applicable:  # its family is not in the model's data: no data
            columns[name] = np.full(n, np.nan)
            continue
        j = model.feature_index.get(name)
        if j is not None and name not in categorical:
            columns[name] = matrix[:, j]
            continue
        values = sent(name)
        columns[name] = (np.full(n, np.nan) if values is None else
                         np.fromiter(map(_number, values), dtype=np.float64, count=n))
    return columns


def to_dict(score: AccountScore) -> dict[str, Any]:
    """The API form of a score (``AccountScoreOut``), built without pydantic for speed."""
    return {
        "account_id": score.account_id, "churn_probability": score.churn_probability,
        "risk_band": score.risk_band, "health_score": score.health_score,
        "health_band": score.health_band, "components": score.components,
        "weights": score.weights, "missing_features": score.missing_features,
        "components_without_data": score.components_without_data,
        "health_note": score.health_note, "quadrant": score.quadrant,
        "survey_due": score.survey_due, "survey_due_reasons": score.survey_due_reasons,
        "raw_score": score.raw_score, "reasons": score.reasons,
        "reasons_rest": score.reasons_rest,
    }


def health_note(weights: Mapping[str, float], without_data: Sequence[str]) -> str | None:
    """``"No data for sentiment: its weight 0.2 was shared among ..."`` (None if none applies)."""
    dropped = [c for c in without_data if weights.get(c, 0) > 0]
    if not dropped:
        return None
    kept = [c for c in COMPONENTS if weights.get(c, 0) > 0 and c not in without_data]
    lost = sum(weights[c] for c in dropped)
    if not kept:
        return f"No data for {', '.join(dropped)}: no health score."
    return (f"No data for {', '.join(dropped)}: {'its' if len(dropped) == 1 else 'their'} weight "
            f"{lost:.2g} was shared among {', '.join(kept)} in proportion to their weights.")


def survey_fields(n: int, columns: Mapping[str, np.ndarray],
                  sent: Callable[[str], Sequence[Any] | None], policy: SurveyPolicy,
                  surveyed: bool = True) -> tuple[list[str | None], list[list[str]]]:
    """Quadrant and survey-due reasons of ``n`` accounts by the rules of
    :mod:`features.surveys`, from the features they rest on; where those were not sent, the
    quadrant and flags as sent (computed by the same rules when the features were built).
    Without surveys in the model's data (``surveyed`` false) there is neither.

    ``columns`` holds the numeric features as float arrays (NaN = not sent); ``sent(name)`` the
    values sent for a feature, None when the request did not send it at all.
    """
    if not surveyed:
        return [None] * n, [[] for _ in range(n)]
    nan = np.full(n, np.nan)
    quads = surveys.quadrants(columns.get("last_nps", nan),
                              columns.get("csat_satisfied_share_180d", nan), policy).tolist()
    for i, value in enumerate(sent(QUADRANT_FEATURE) or ()):
        if quads[i] is None and value is not None and value == value:
            quads[i] = str(value)
    tenure = columns.get("tenure_days", nan)
    due = surveys.survey_due_reasons(columns.get("days_since_last_nps_sent", nan), tenure, policy)
    for i in np.flatnonzero(np.isnan(tenure)).tolist():
        due[i] = [name for name in (surveys.NPS_DUE, surveys.ONBOARDING_DUE)
                  if columns.get(name, nan)[i] > 0]
    return quads, due


def score_accounts(model: LoadedModel, accounts: Sequence[AccountInput] | AccountColumns,
                   weights: Mapping[str, float] = DEFAULT_WEIGHTS,
                   bands: Bands | None = None, *, reasons: int = 0,
                   policy: SurveyPolicy | None = None,
                   explainer: Explainer | None = None) -> list[AccountScore]:
    """Score ``accounts`` (``(account_id, {feature: value})`` pairs, or :class:`AccountColumns`)
    with ``model``; both forms of the same accounts give the same scores.

    Args:
        weights: health component weights (see :data:`features.health.DEFAULT_WEIGHTS`).
        bands: risk and health band lower bounds; defaults to :class:`Bands()`.
        reasons: how many reasons per account (0 = none, and no TreeSHAP call).
        policy: quadrant and survey-due thresholds.
        explainer: reuse one :class:`Explainer` per model (built here when not given).
    """
    if not len(accounts):
        return []
    bands = bands or Bands()
    policy = policy or DEFAULT_POLICY
    if isinstance(accounts, AccountColumns):
        ids = list(accounts.ids)
        matrix, missing = model.encode_columns(accounts.values, len(ids))
        sent = accounts.values.get
        record = accounts.record
    else:
        ids = [account_id for account_id, _ in accounts]
        records = [features for _, features in accounts]
        matrix, missing = model.encode(records)

        def sent(name: str) -> list[Any]:
            return [r.get(name) for r in records]

        record = records.__getitem__
    contributions = None
    if reasons > 0:
        contributions = model.contributions(matrix)
        raw = contributions.sum(axis=1)
    else:
        raw = model.raw_score(matrix)
    probability = model.probability(raw)

    columns = _health_columns(model, matrix, sent)
    components = component_scores(columns, probability, model.health_reference)
    health, effective = blend(components, weights)
    quads, due = survey_fields(len(ids), columns, sent, policy,
                               surveyed="surveys" not in model.families_not_applicable)
    if contributions is not None and explainer is None:
        explainer = model.explainer
    risk_bands = band_labels(probability, bands.risk)
    health_bands = band_labels(health, bands.health)

    # Rounded once per column (NaN -> None), not once per value. Which components lack data
    # takes few patterns (a bit per component), so their lists and notes are built per pattern.
    comp = {c: [None if v != v else v for v in np.round(components[c], 2).tolist()]
            for c in COMPONENTS}
    applied = {c: np.round(effective[c], 4).tolist() if c in effective else [0.0] * len(ids)
               for c in COMPONENTS}
    pattern = np.zeros(len(ids), dtype=np.int64)
    for k, c in enumerate(COMPONENTS):
        pattern |= np.isnan(components[c]).astype(np.int64) << k
    health_list = [None if v != v else v for v in np.round(health, 2).tolist()]
    feature_names = model.encoder.feature_names
    raw_list = raw.tolist()
    probability_list = probability.tolist()
    rows, cols = np.nonzero(missing)
    missing_names: list[list[str]] = [[] for _ in ids]
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        missing_names[r].append(feature_names[c])
    without_by_pattern: dict[int, tuple[list[str], str | None]] = {}
    # Literal dicts per account below (cheaper than dict(zip(...))); by name, so they stay
    # right if COMPONENTS is reordered.
    usage, engagement, sentiment, risk = (comp[c] for c in _COMPONENT_KEYS)
    w_usage, w_engagement, w_sentiment, w_risk = (applied[c] for c in _COMPONENT_KEYS)
    results = []
    for i, (account_id, code) in enumerate(zip(ids, pattern.tolist(), strict=True)):
        known = without_by_pattern.get(code)
        if known is None:
            without = [c for k, c in enumerate(COMPONENTS) if code >> k & 1]
            known = without_by_pattern[code] = (without, health_note(weights, without))
        top = rest = None
        if contributions is not None:
            top = explainer.reasons(contributions[i], record(i), reasons)  # type: ignore[union-attr]
            rest = raw_list[i] - sum(r["contribution"] for r in top)
        results.append(AccountScore(
            account_id=account_id,
            churn_probability=probability_list[i],
            risk_band=risk_bands[i] or "",
            health_score=health_list[i],
            health_band=health_bands[i],
            components={"usage": usage[i], "engagement": engagement[i],
                        "sentiment": sentiment[i], "risk": risk[i]},
            weights={"usage": w_usage[i], "engagement": w_engagement[i],
                     "sentiment": w_sentiment[i], "risk": w_risk[i]},
            missing_features=missing_names[i],
            components_without_data=known[0].copy(),
            raw_score=raw_list[i],
            reasons=top,
            reasons_rest=rest,
            health_note=known[1],
            quadrant=quads[i],
            survey_due_reasons=due[i],
        ))
    return results
