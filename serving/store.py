"""The score store: every score ``churn score`` computed, behind a SQLAlchemy URL.

One row per (account, as-of date, model name, model version), with the probability, bands,
health score and components, quadrant, survey-due flags and reasons. Rows are only ever inserted:
scoring the same accounts again for the same date with the same model version leaves the stored
rows as they were (and says how many were kept), so the history is an audit trail of what the
service said. A new model version or a new date adds rows.

SQLite (``sqlite:///churn-scores.db``, the default) and PostgreSQL (``postgresql://user@host/db``)
are tested; any SQLAlchemy 2 dialect should do. A bare ``postgresql://`` URL uses psycopg 3, the
driver this package installs (SQLAlchemy's own default, psycopg2, is only a dev dependency).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from features.redaction import redact
from serving.scoring import AccountScore

DEFAULT_TABLE = "churn_scores"


class StoreError(RuntimeError):
    """The score store could not be read or written (the message names the URL, redacted, as
    every URL a driver's error quotes)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True)
class WriteResult:
    written: int
    kept: int  # already stored for that account, date and model version: left unchanged


def _read_only(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` and connection arguments that open the store read-only, as the API reads it.

    SQLite: the file is opened with ``mode=ro``, so a mistyped path fails ("unable to open
    database file") instead of creating an empty database. PostgreSQL: every transaction is
    read-only, and a connection attempt gives up after a few seconds (``/readyz`` asks).
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not parsed.database.startswith("file:"):
            query = "&".join(f"{k}={v}" for k, v in parsed.query.items())
            path = parsed.database
            return (f"sqlite:///file:{path}?mode=ro&uri=true" + (f"&{query}" if query else ""),
                    {})
        return url, {}
    if parsed.get_backend_name() == "postgresql":
        return url, {"options": "-c default_transaction_read_only=on", "connect_timeout": 5}
    return url, {}


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("account_id", sa.String(256), primary_key=True),
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("churn_probability", sa.Float, nullable=False),
        sa.Column("risk_band", sa.String(64), nullable=False),
        sa.Column("health_score", sa.Float),
        sa.Column("health_band", sa.String(64)),
        sa.Column("quadrant", sa.String(32)),
        sa.Column("survey_due", sa.Boolean, nullable=False),
        sa.Column("survey_due_reasons", sa.JSON, nullable=False),
        sa.Column("components", sa.JSON, nullable=False),
        sa.Column("weights", sa.JSON, nullable=False),
        sa.Column("health_note", sa.Text),
        sa.Column("reasons", sa.JSON),
        sa.Column("missing_features", sa.JSON, nullable=False),
        sa.Column("horizon_days", sa.Integer),
        sa.Index(f"ix_{name}_as_of", "as_of", "scored_at"),
    )


class ScoreStore:
    """Insert-only store of scores. ``table`` lets several stores share one database."""

    def __init__(self, url: str, table: str = DEFAULT_TABLE, *, read_only: bool = False) -> None:
        self.url = url
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        connect_args: dict[str, Any] = {}
        if read_only:
            url, connect_args = _read_only(url)
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        except Exception as exc:  # noqa: BLE001 -- bad URL, missing driver
            raise StoreError(f"Cannot open the score store {redact(url)}: {exc}") from exc
        self.metadata = sa.MetaData()
        self.table = _table(self.metadata, table)

    def create(self) -> None:
        try:
            self.metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"Cannot create the score table in {redact(self.url)}: "
                             f"{exc}") from exc

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the store answers a query (``/readyz``)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"Cannot reach the score store {redact(self.url)}: {exc}") from exc

    def exists(self) -> bool:
        try:
            return sa.inspect(self.engine).has_table(self.table.name)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"Cannot read the score store {redact(self.url)}: {exc}") from exc

    def write(self, scores: Sequence[AccountScore], *, as_of: dt.date, model_name: str,
              model_version: str | None, horizon_days: int | None = None) -> WriteResult:
        """Insert ``scores``; rows already stored for (account, as_of, model version) are kept."""
        self.create()
        version = model_version or ""
        now = dt.datetime.now(dt.UTC)
        try:
            written = self._insert_new(scores, as_of, model_name, version, now, horizon_days)
        except sa.exc.IntegrityError as exc:
            raise StoreError(f"Scores for {as_of} and model version {version or '-'} clash with "
                             "stored rows (another writer at the same time, or an account twice "
                             "in the batch); nothing was written by this call.") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"Cannot write to the score store {redact(self.url)}: {exc}") from exc
        return WriteResult(written=written, kept=len(scores) - written)

    def _insert_new(self, scores: Sequence[AccountScore], as_of: dt.date, model_name: str,
                    version: str, now: dt.datetime, horizon_days: int | None) -> int:
        t = self.table
        with self.engine.begin() as conn:
            existing = set(conn.execute(sa.select(t.c.account_id).where(
                t.c.as_of == as_of, t.c.model_name == model_name,
                t.c.model_version == version)).scalars())
            rows = [{
                "account_id": s.account_id, "as_of": as_of, "model_name": model_name,
                "model_version": version, "scored_at": now,
                "churn_probability": s.churn_probability, "risk_band": s.risk_band,
                "health_score": s.health_score, "health_band": s.health_band,
                "quadrant": s.quadrant, "survey_due": s.survey_due,
                "survey_due_reasons": s.survey_due_reasons, "components": s.components,
                "weights": s.weights, "health_note": s.health_note, "reasons": s.reasons,
                "missing_features": s.missing_features, "horizon_days": horizon_days,
            } for s in scores if s.account_id not in existing]
            if rows:
                conn.execute(sa.insert(t), rows)
        return len(rows)

    def _rows(self, query: sa.Select) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def account(self, account_id: str, model_name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The account's scores by model ``model_name`` (the model of one data set), newest first
        (by as_of, then when they were computed)."""
        t = self.table
        return self._rows(sa.select(t).where(t.c.account_id == account_id,
                                             t.c.model_name == model_name)
                          .order_by(t.c.as_of.desc(), t.c.scored_at.desc(),
                                    t.c.model_version.desc()).limit(limit))

    def portfolio(self, model_name: str, as_of: dt.date | None = None) -> dict[str, Any] | None:
        """Distribution of the portfolio scored by model ``model_name`` on ``as_of`` (default:
        the latest date it scored).

        When several versions of the model scored that date, the most recently computed one is
        used. Returns None when nothing is stored (for that model and date).
        """
        if not self.exists():
            return None
        t = self.table
        with self.engine.connect() as conn:
            if as_of is None:
                as_of = conn.execute(sa.select(sa.func.max(t.c.as_of))
                                     .where(t.c.model_name == model_name)).scalar()
                if as_of is None:
                    return None
            latest = conn.execute(
                sa.select(t.c.model_name, t.c.model_version)
                .where(t.c.as_of == as_of, t.c.model_name == model_name)
                .order_by(t.c.scored_at.desc()).limit(1)).first()
            if latest is None:
                return None
            where = (t.c.as_of == as_of, t.c.model_name == latest.model_name,
                     t.c.model_version == latest.model_version)

            def counts(column: sa.Column) -> dict[str, int]:
                rows = conn.execute(sa.select(column, sa.func.count()).where(*where)
                                    .group_by(column))
                return {(k if k is not None else "none"): int(n) for k, n in rows}

            total, due = conn.execute(sa.select(
                sa.func.count(), sa.func.sum(sa.case((t.c.survey_due, 1), else_=0)))
                .where(*where)).one()
            return {"as_of": as_of, "model_name": latest.model_name,
                    "model_version": latest.model_version or None, "accounts": int(total),
                    "risk_bands": counts(t.c.risk_band), "health_bands": counts(t.c.health_band),
                    "quadrants": counts(t.c.quadrant), "survey_due": int(due or 0)}
