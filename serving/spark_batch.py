"""Batch scoring on Apache Spark for ``churn score --engine spark``.

The scoring rows are built on Spark (:func:`serving.batch.scoring_frame`, the rule of the
in-process path); the churn probability is the registered model's pyfunc applied by
``mlflow.pyfunc.spark_udf`` in Spark's Python workers; the risk and health bands, the health score,
the quadrant, the survey flags and the top reasons are those of :func:`serving.batch.score_frame`
(the API's rules), computed per partition. The scores are written as a Parquet directory (a
temporary directory renamed when complete) and, when asked, appended to the score store.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.contract import Tables
from features.io import atomic_dir
from serving.batch import Progress, by_date, score_frame, scoring_frame, store_date, with_owners
from serving.model import LoadedModel
from serving.scoring import AccountScore, to_dict
from serving.settings import ServingSettings
from serving.store import ScoreStore, WriteResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: The score columns written (the rest of each score is in ``detail``, as JSON).
COLUMNS = ("account_id", "as_of", "churn_probability", "risk_band", "health_score", "health_band",
           "quadrant", "survey_due", "reasons", "detail")
SCHEMA = ("account_id string, as_of timestamp, churn_probability double, risk_band string, "
          "health_score double, health_band string, quadrant string, survey_due boolean, "
          "reasons string, detail string")

#: Models loaded in this Python worker, by URI (a worker scores many partitions).
_MODELS: dict[str, LoadedModel] = {}


def pinned_uri(model: LoadedModel) -> str:
    """The model version itself, so that a promotion while scoring changes nothing."""
    if model.uri.startswith("models:/") and model.version:
        return f"models:/{model.name}/{model.version}"
    return model.uri


def _rules(settings: ServingSettings, uri: str):
    """The per-partition function: the API's rules on each batch of rows."""

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from serving.loader import load_model

        if uri not in _MODELS:
            _MODELS[uri] = load_model(uri, settings.tracking_uri, settings.treeshap)
        model = _MODELS[uri]
        for batch in batches:
            scores = score_frame(model, batch, settings)
            yield _score_rows(batch, scores)

    return apply


def _score_rows(batch: pd.DataFrame, scores: list[AccountScore]) -> pd.DataFrame:
    details = [to_dict(s) for s in scores]
    return pd.DataFrame({
        "account_id": batch["account_id"].astype(str).to_numpy(),
        "as_of": batch["as_of"].to_numpy(),
        "churn_probability": batch["churn_probability"].to_numpy(dtype=float),
        "risk_band": [s.risk_band for s in scores],
        "health_score": [s.health_score for s in scores],
        "health_band": [s.health_band for s in scores],
        "quadrant": [s.quadrant for s in scores],
        "survey_due": [s.survey_due for s in scores],
        "reasons": [json.dumps(s.reasons) for s in scores],
        "detail": [json.dumps(d, default=str) for d in details],
    }, columns=list(COLUMNS))


def score_frame_spark(session: SparkSession, model: LoadedModel, frame: pd.DataFrame,
                      settings: ServingSettings) -> DataFrame:
    """The scores of a feature frame as a Spark DataFrame (columns :data:`COLUMNS`)."""
    import mlflow

    uri = pinned_uri(model)
    names = [n for n in model.encoder.feature_names if n in frame.columns]
    features = session.createDataFrame(frame[["account_id", "as_of", *names]])
    mlflow.set_tracking_uri(settings.tracking_uri)
    predict = mlflow.pyfunc.spark_udf(session, uri, env_manager="local", result_type="double")
    with_probability = features.withColumn("churn_probability", predict(*names))
    return with_probability.mapInPandas(_rules(settings, uri), SCHEMA)


def account_score(row: dict[str, Any]) -> AccountScore:
    """A written score back as an :class:`AccountScore` (for the score store)."""
    detail = json.loads(row["detail"])
    detail.pop("survey_due", None)
    detail["churn_probability"] = float(row["churn_probability"])
    return AccountScore(**detail)


@dataclass(frozen=True)
class SparkBatchResult:
    """What ``churn score --engine spark`` did."""

    model: LoadedModel
    rows: int
    out: Path
    #: Per date, what was stored (empty unless the store was asked for).
    results: dict[dt.date, WriteResult]
    warnings: list[str]


def score_data_spark(data: str | Path | Tables, settings: ServingSettings, session: SparkSession,
                     out: str | Path, dates: Iterable[object] | None = None, store: bool = False,
                     progress: Progress = lambda _: None) -> SparkBatchResult:
    """Score every account of ``data`` active at ``dates`` on Spark and write the scores to the
    Parquet directory ``out`` (and, with ``store``, to the configured score store).

    Raises:
        FileExistsError: ``out`` exists and is not empty (nothing is overwritten).
        ModelLoadError, DataContractError, FeatureCoverageError, StoreError: as
            :func:`serving.batch.score_data`.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists: choose a new output directory")
    model, tables, frame = scoring_frame(data, settings, dates, progress, spark=session)
    scored = score_frame_spark(session, model, frame, settings)
    with atomic_dir(out) as tmp:
        scored.write.mode("overwrite").parquet(str(tmp))
    progress(f"wrote {len(frame):,} scores to {out}")
    results: dict[dt.date, WriteResult] = {}
    if store:
        rows = dict(by_date(with_owners(frame, tables)))
        target = ScoreStore(settings.score_store_url)
        for as_of, part in by_date(pd.read_parquet(out)):
            scores = [account_score(r) for r in part.to_dict("records")]
            results[as_of] = store_date(target, model, scores, rows[as_of], as_of)
            progress(f"{as_of}: {results[as_of].written:,} scores stored, "
                     f"{results[as_of].kept:,} already stored for this model version (kept)")
    return SparkBatchResult(model, len(frame), out, results, list(tables.warnings))
