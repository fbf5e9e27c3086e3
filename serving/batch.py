"""Batch scoring for ``churn score``: a feature frame in, scores in the score store out.

The same :func:`serving.scoring.score_accounts` as the API, with the weights, bands, thresholds
and number of reasons from :class:`~serving.settings.ServingSettings`, so a stored score is what
the API would have answered for the same features and model.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from serving.loader import LoadedModel
from serving.scoring import AccountScore, Bands, score_accounts
from serving.settings import ServingSettings
from serving.store import ScoreStore, WriteResult
from serving.surveys import SurveyPolicy

CHUNK = 5_000


def policy_from(settings: ServingSettings) -> SurveyPolicy:
    return SurveyPolicy(nps_high=settings.quadrant_nps_high, csat_high=settings.quadrant_csat_high,
                        due_days=settings.survey_due_days,
                        onboarding_days=settings.onboarding_survey_days)


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def frame_records(frame: pd.DataFrame, feature_names: list[str]) -> list[tuple[str, dict]]:
    """``(account_id, {feature: value})`` pairs from a feature frame (NaN/NA -> missing)."""
    names = [n for n in feature_names if n in frame.columns]
    ids = frame["account_id"].astype(str).tolist()
    columns = {n: frame[n].astype(object).tolist() for n in names}
    return [(ids[i], {n: _clean(columns[n][i]) for n in names}) for i in range(len(ids))]


def score_frame(model: LoadedModel, frame: pd.DataFrame, settings: ServingSettings
                ) -> list[AccountScore]:
    accounts = frame_records(frame, model.encoder.feature_names)
    bands = Bands(risk=settings.risk_bands, health=settings.health_bands)
    out: list[AccountScore] = []
    for start in range(0, len(accounts), CHUNK):
        out += score_accounts(model, accounts[start:start + CHUNK], settings.health_weights,
                              bands, reasons=settings.reasons_top, policy=policy_from(settings))
    return out


def score_to_store(model: LoadedModel, frame: pd.DataFrame, store: ScoreStore,
                   settings: ServingSettings, progress: Callable[[str], None] = lambda _: None
                   ) -> dict[dt.date, WriteResult]:
    """Score every (account_id, as_of) row of ``frame`` and store the scores, date by date."""
    results = {}
    for as_of, part in frame.groupby(pd.to_datetime(frame["as_of"]).dt.date, sort=True):
        scores = score_frame(model, part, settings)
        results[as_of] = store.write(scores, as_of=as_of, model_name=model.name,
                                     model_version=model.version, horizon_days=model.horizon_days)
        progress(f"{as_of}: {results[as_of].written:,} scores written, "
                 f"{results[as_of].kept:,} already stored for this model version (kept)")
    return results
