"""Batch scoring for ``churn score``: the scoring rows of a data set in, scores in the score
store out.

The rows are :func:`features.rows.feature_rows`' (the rule that builds training rows too), scored
by the same :func:`serving.scoring.score_accounts` as the API with the weights, bands, thresholds
and number of reasons from :class:`~serving.settings.ServingSettings`, so a stored score is what
the API would have answered for the same features and model. Beside each score the store keeps
what the CS console shows (:class:`~serving.store.AccountContext`): the account's mrr, renewal
date and recency features from the same rows, and its owner from the accounts table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import Tables
from features.key_events import with_key_events
from features.rows import feature_rows
from features.scorer import check_coverage
from features.sources import load_tables
from serving.loader import load_model
from serving.model import LoadedModel
from serving.scoring import AccountScore, Bands, score_accounts
from serving.settings import ServingSettings
from serving.store import AccountContext, ScoreStore, WriteResult

CHUNK = 5_000
#: Features the console shows as the account's survey, touchpoint and usage recency.
RECENCY_FEATURES = ("days_since_last_survey", "days_since_last_nps", "days_since_last_nps_sent",
                    "days_since_last_proactive", "days_since_last_review",
                    "days_since_last_event")
Progress = Callable[[str], None]


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
    """Score every row of a feature frame as the API would (in chunks, to bound memory)."""
    accounts = frame_records(frame, model.encoder.feature_names)
    bands = Bands(risk=settings.risk_bands, health=settings.health_bands)
    out: list[AccountScore] = []
    for start in range(0, len(accounts), CHUNK):
        out += score_accounts(model, accounts[start:start + CHUNK], settings.health_weights,
                              bands, reasons=settings.reasons_top, policy=settings.survey_policy)
    return out


def account_contexts(frame: pd.DataFrame, as_of: dt.date, not_applicable: Iterable[str] = ()
                     ) -> dict[str, AccountContext]:
    """``{account_id: context}`` of the rows of one date: mrr, renewal date (``as_of`` plus
    ``days_to_renewal``), ``owner`` and the recency features, where the frame has them (and
    they are not in ``not_applicable``: a data set without surveys has no survey recency, rather
    than "never surveyed")."""
    def column(name: str) -> list[Any]:
        if name not in frame.columns:
            return [None] * len(frame)
        return [_clean(v) for v in frame[name].astype(object).tolist()]

    skip = set(not_applicable)
    recency = {name: column(name) for name in RECENCY_FEATURES
               if name in frame.columns and name not in skip}
    out = {}
    for i, (account, mrr, days, owner) in enumerate(zip(
            frame["account_id"].astype(str).tolist(), column("mrr"), column("days_to_renewal"),
            column("owner"), strict=True)):
        renewal = None if days is None else as_of + dt.timedelta(days=int(days))
        out[account] = AccountContext(mrr=mrr, renewal_date=renewal,
                                      owner=None if owner is None else str(owner),
                                      recency={k: v[i] for k, v in recency.items()})
    return out


def with_owners(frame: pd.DataFrame, tables: Tables) -> pd.DataFrame:
    """``frame`` with each account's ``owner`` from the accounts table (when it has one)."""
    if "owner" not in tables.accounts.columns or "owner" in frame.columns:
        return frame
    owners = tables.accounts.set_index(tables.accounts["account_id"].astype(str))["owner"]
    return frame.assign(owner=frame["account_id"].astype(str).map(owners))


def by_date(frame: pd.DataFrame) -> Iterator[tuple[dt.date, pd.DataFrame]]:
    """The rows of ``frame`` per observation date, in date order."""
    yield from frame.groupby(pd.to_datetime(frame["as_of"]).dt.date, sort=True)


def store_date(store: ScoreStore, model: LoadedModel, scores: list[AccountScore],
               rows: pd.DataFrame, as_of: dt.date) -> WriteResult:
    """Store one date's ``scores`` with the context of their feature ``rows`` (mrr, renewal,
    owner, recency: what the worklist ranks and the console shows)."""
    return store.write(scores, as_of=as_of, model_name=model.name, model_version=model.version,
                       horizon_days=model.horizon_days,
                       context=account_contexts(rows, as_of, model.not_applicable))


def score_to_store(model: LoadedModel, frame: pd.DataFrame, store: ScoreStore,
                   settings: ServingSettings, progress: Progress = lambda _: None
                   ) -> dict[dt.date, WriteResult]:
    """Score every (account_id, as_of) row of ``frame`` and store the scores with their
    :func:`account_contexts`, date by date."""
    results = {}
    for as_of, part in by_date(frame):
        results[as_of] = store_date(store, model, score_frame(model, part, settings), part, as_of)
        progress(f"{as_of}: {results[as_of].written:,} scores written, "
                 f"{results[as_of].kept:,} already stored for this model version (kept)")
    return results


@dataclass(frozen=True)
class BatchResult:
    """What ``churn score`` did: the model it used, how many rows, and per date what was stored."""

    model: LoadedModel
    rows: int
    results: dict[dt.date, WriteResult]
    #: What loading the data noticed (files not read ...).
    warnings: list[str]

    @property
    def written(self) -> int:
        return sum(r.written for r in self.results.values())

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.results.values())


def score_data(data: str | Path | Tables, settings: ServingSettings,
               dates: Iterable[object] | None = None, progress: Progress = lambda _: None
               ) -> BatchResult:
    """Score every account of ``data`` (a folder, mapping file or database URL, or loaded tables)
    active at ``dates`` (default: the day after the data ends) with the configured model, and
    append the scores to the configured score store.

    The model is loaded first (a wrong model URI fails before the data is read); the accounts
    active at a date are decided with the grace period the model was trained with.

    Raises:
        ModelLoadError: the model cannot be found or read.
        DataContractError: the data breaks the input contract.
        FeatureCoverageError: the data lacks most of the model's features.
        StoreError: the score store cannot be written.
    """
    model, tables, frame = scoring_frame(data, settings, dates, progress)
    store = ScoreStore(settings.score_store_url)
    results = score_to_store(model, with_owners(frame, tables), store, settings, progress)
    return BatchResult(model, len(frame), results, list(tables.warnings))


def scoring_frame(data: str | Path | Tables, settings: ServingSettings,
                  dates: Iterable[object] | None = None, progress: Progress = lambda _: None,
                  spark: Any = None) -> tuple[LoadedModel, Tables, pd.DataFrame]:
    """The configured model, the data and its scoring rows (features built on ``spark``, a
    SparkSession, when given): loaded first, so that a wrong model URI fails before the data
    is read; the accounts active at a date are decided with the model's grace period."""
    model = load_model(settings.model_uri, settings.tracking_uri, settings.treeshap)
    tables = data if isinstance(data, Tables) else load_tables(data, spark)
    tables = with_key_events(tables, model.metadata.get("key_events"),
                             model.metadata.get("key_event_windows"))
    grace = (model.metadata.get("label") or {}).get("grace_days")
    frame = feature_rows(tables, None if dates is None else list(dates), grace_days=grace,
                         spark=spark)
    check_coverage(frame, model.encoder.feature_names, f"model {model.name}",
                   f"the data at {tables.source}")
    progress(f"scoring {len(frame):,} account-dates with {model.name} version "
             f"{model.version or '-'}")
    return model, tables, frame
