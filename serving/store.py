"""The score store: every score ``churn score`` computed, behind a SQLAlchemy URL.

One row per (account, as-of date, model name, model version), with the probability, bands,
health score and components, quadrant, survey-due flags and reasons, and what the CS console
ranks by: the account's mrr, renewal date, owner, revenue at risk
(:func:`serving.scoring.revenue_at_risk`) and survey/touchpoint recency. Rows are only ever inserted:
scoring the same accounts again for the same date with the same model version leaves the stored
rows as they were (and says how many were kept), so the history is an audit trail of what the
service said. A new model version or a new date adds rows.

SQLite (``sqlite:///churn-scores.db``, the default) and PostgreSQL (``postgresql://user@host/db``)
are tested; any SQLAlchemy 2 dialect should do. A table written before the console's columns
(:data:`CONSOLE_COLUMNS`) is read as it is (those values are None) and gains them, empty, the next
time ``churn score`` writes to it. A bare ``postgresql://`` URL uses psycopg 3, the
driver this package installs (SQLAlchemy's own default, psycopg2, is only a dev dependency).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from features.redaction import redact
from serving.scoring import AccountScore, revenue_at_risk

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


@dataclass(frozen=True)
class AccountContext:
    """What the console shows beside a score, from the account's data at the scoring date."""

    #: Monthly recurring revenue of the current subscription.
    mrr: float | None = None
    #: The current subscription's next renewal.
    renewal_date: dt.date | None = None
    #: The CSM who holds the account (the accounts table's ``owner``).
    owner: str | None = None
    #: ``{feature: days}``: how long ago the account last answered a survey, had a touchpoint ...
    recency: dict[str, float | None] = field(default_factory=dict)


#: Columns added for the CS console; a table written before them lacks them.
CONSOLE_COLUMNS = ("mrr", "renewal_date", "owner", "revenue_at_risk", "recency")


#: What :meth:`ScoreStore.latest` reads (the JSON of components, weights ... is left unread).
WORKLIST_COLUMNS = ("account_id", "as_of", "churn_probability", "risk_band", "health_score",
                    "health_band", "quadrant", "survey_due", "owner", "mrr", "revenue_at_risk",
                    "renewal_date", "reasons")


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
        sa.Column("mrr", sa.Float),
        sa.Column("renewal_date", sa.Date),
        sa.Column("owner", sa.String(256)),
        sa.Column("revenue_at_risk", sa.Float),
        sa.Column("recency", sa.JSON),
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
        self._complete = False  # the stored table has every column of :func:`_table`

    def create(self) -> None:
        """Create the table, or add the console's columns to a table written before them."""
        try:
            self.metadata.create_all(self.engine)
            missing = [c for c in CONSOLE_COLUMNS if c not in self._stored_columns()]
            with self.engine.begin() as conn:
                for name in missing:
                    column = self.table.c[name]
                    kind = column.type.compile(dialect=self.engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE "{self.table.name}" '
                                         f'ADD COLUMN "{name}" {kind}'))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"Cannot create the score table in {redact(self.url)}: "
                             f"{exc}") from exc
        self._complete = True

    def _stored_columns(self) -> set[str]:
        return {c["name"] for c in sa.inspect(self.engine).get_columns(self.table.name)}

    def columns(self) -> list[sa.Column]:
        """The table's columns the stored table has (a table written before the console's
        columns lacks them)."""
        if not self._complete:
            try:
                stored = self._stored_columns()
            except sa.exc.SQLAlchemyError as exc:
                raise StoreError(f"Cannot read the score store {redact(self.url)}: "
                                 f"{exc}") from exc
            if all(c in stored for c in CONSOLE_COLUMNS):
                self._complete = True
            else:
                return [c for c in self.table.c if c.name in stored]
        return list(self.table.c)

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
              model_version: str | None, horizon_days: int | None = None,
              context: Mapping[str, AccountContext] | None = None) -> WriteResult:
        """Insert ``scores`` (with each account's ``context``, when given); rows already stored
        for (account, as_of, model version) are kept."""
        self.create()
        version = model_version or ""
        now = dt.datetime.now(dt.UTC)
        try:
            written = self._insert_new(scores, as_of, model_name, version, now, horizon_days,
                                       context or {})
        except sa.exc.IntegrityError as exc:
            raise StoreError(f"Scores for {as_of} and model version {version or '-'} clash with "
                             "stored rows (another writer at the same time, or an account twice "
                             "in the batch); nothing was written by this call.") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"Cannot write to the score store {redact(self.url)}: {exc}") from exc
        return WriteResult(written=written, kept=len(scores) - written)

    def _insert_new(self, scores: Sequence[AccountScore], as_of: dt.date, model_name: str,
                    version: str, now: dt.datetime, horizon_days: int | None,
                    context: Mapping[str, AccountContext]) -> int:
        t = self.table
        none = AccountContext()
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
                **_context_row(context.get(s.account_id, none), s.churn_probability),
            } for s in scores if s.account_id not in existing]
            if rows:
                conn.execute(sa.insert(t), rows)
        return len(rows)

    def _rows(self, query: sa.Select) -> list[dict[str, Any]]:
        """The rows of ``query``, each with every column of the table (None where the stored
        table lacks it)."""
        blank = dict.fromkeys(self.table.c.keys())
        with self.engine.connect() as conn:
            return [blank | dict(r._mapping) for r in conn.execute(query)]

    def account(self, account_id: str, model_name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The account's scores by model ``model_name`` (the model of one data set), newest first
        (by as_of, then when they were computed)."""
        if not self.exists():
            return []
        t = self.table
        return self._rows(sa.select(*self.columns())
                          .where(t.c.account_id == account_id, t.c.model_name == model_name)
                          .order_by(t.c.as_of.desc(), t.c.scored_at.desc(),
                                    t.c.model_version.desc()).limit(limit))

    def snapshot(self, model_name: str, as_of: dt.date | None = None) -> Snapshot | None:
        """The scores of the portfolio on ``as_of`` (default: the latest date model
        ``model_name`` scored): when several versions of the model scored that date, the most
        recently computed one. None when nothing is stored (for that model and date)."""
        if not self.exists():
            return None
        t = self.table
        with self.engine.connect() as conn:
            if as_of is None:
                as_of = conn.execute(sa.select(sa.func.max(t.c.as_of))
                                     .where(t.c.model_name == model_name)).scalar()
                if as_of is None:
                    return None
            version = conn.execute(
                sa.select(t.c.model_version)
                .where(t.c.as_of == as_of, t.c.model_name == model_name)
                .order_by(t.c.scored_at.desc()).limit(1)).scalar()
        return None if version is None else Snapshot(model_name, as_of, version)

    def _where(self, snap: Snapshot) -> tuple[sa.ColumnElement[bool], ...]:
        t = self.table
        return (t.c.as_of == snap.as_of, t.c.model_name == snap.model_name,
                t.c.model_version == snap.model_version)

    def portfolio(self, model_name: str, as_of: dt.date | None = None) -> dict[str, Any] | None:
        """Distribution of the portfolio of :meth:`snapshot`: band and quadrant counts, surveys
        due, revenue at risk in total and by risk band (None for a table written before it was
        stored). None when nothing is stored (for that model and date)."""
        snap = self.snapshot(model_name, as_of)
        if snap is None:
            return None
        t = self.table
        where = self._where(snap)
        with self.engine.connect() as conn:
            def counts(column: sa.Column) -> dict[str, int]:
                rows = conn.execute(sa.select(column, sa.func.count()).where(*where)
                                    .group_by(column))
                return {(k if k is not None else "none"): int(n) for k, n in rows}

            total, due = conn.execute(sa.select(
                sa.func.count(), sa.func.sum(sa.case((t.c.survey_due, 1), else_=0)))
                .where(*where)).one()
            at_risk, by_band = None, None
            if "revenue_at_risk" in {c.name for c in self.columns()}:
                by_band = {band: float(v or 0) for band, v in conn.execute(
                    sa.select(t.c.risk_band, sa.func.sum(t.c.revenue_at_risk)).where(*where)
                    .group_by(t.c.risk_band))}
                at_risk = sum(by_band.values())
            return {"as_of": snap.as_of, "model_name": snap.model_name,
                    "model_version": snap.model_version or None, "accounts": int(total),
                    "risk_bands": counts(t.c.risk_band), "health_bands": counts(t.c.health_band),
                    "quadrants": counts(t.c.quadrant), "survey_due": int(due or 0),
                    "revenue_at_risk": at_risk, "revenue_at_risk_by_band": by_band}

    def latest(self, snap: Snapshot, *, risk_band: str | None = None,
               health_band: str | None = None, quadrant: str | None = None,
               survey_due: bool | None = None, renewal_within_days: int | None = None,
               owner: str | None = None) -> list[dict[str, Any]]:
        """The rows of ``snap`` that pass the filters given (the console's worklist)."""
        t = self.table
        where = list(self._where(snap))
        stored = {c.name for c in self.columns()}
        for column, value in (("risk_band", risk_band), ("health_band", health_band),
                              ("quadrant", quadrant), ("owner", owner)):
            if value is not None:
                where.append(t.c[column] == value if column in stored else sa.false())
        if survey_due is not None:
            where.append(t.c.survey_due == survey_due)
        if renewal_within_days is not None:
            where.append(sa.and_(t.c.renewal_date >= snap.as_of, t.c.renewal_date <= snap.as_of
                                 + dt.timedelta(days=renewal_within_days))
                         if "renewal_date" in stored else sa.false())
        return self._rows(sa.select(*(c for c in self.columns() if c.name in WORKLIST_COLUMNS))
                          .where(*where))

    def previous(self, snap: Snapshot) -> dict[str, float]:
        """``{account_id: churn probability}`` of each account's latest score by the same model
        before ``snap``'s date (of the most recently computed version on that date)."""
        t = self.table
        before = (sa.select(t.c.account_id, sa.func.max(t.c.as_of).label("as_of"))
                  .where(t.c.model_name == snap.model_name, t.c.as_of < snap.as_of)
                  .group_by(t.c.account_id).subquery())
        query = (sa.select(t.c.account_id, t.c.churn_probability)
                 .join(before, sa.and_(t.c.account_id == before.c.account_id,
                                       t.c.as_of == before.c.as_of))
                 .where(t.c.model_name == snap.model_name)
                 .order_by(t.c.scored_at))
        with self.engine.connect() as conn:
            return {a: p for a, p in conn.execute(query)}  # the newest computed last, kept

    def owners(self, snap: Snapshot) -> list[str]:
        """The owners of the accounts of ``snap``, sorted."""
        if "owner" not in {c.name for c in self.columns()}:
            return []
        t = self.table
        with self.engine.connect() as conn:
            return sorted(o for o in conn.execute(sa.select(t.c.owner).distinct()
                                                  .where(*self._where(snap))).scalars() if o)


@dataclass(frozen=True)
class Snapshot:
    """The scores of one date by one version of a model: what the portfolio and worklist show."""

    model_name: str
    as_of: dt.date
    model_version: str  # "" = no version

def _context_row(context: AccountContext, churn_probability: float) -> dict[str, Any]:
    return {"mrr": context.mrr, "renewal_date": context.renewal_date, "owner": context.owner,
            "revenue_at_risk": revenue_at_risk(context.mrr, churn_probability),
            "recency": context.recency or None}
