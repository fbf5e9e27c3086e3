"""Input data contract v1: the five tables, their columns, and how a frame is validated.

This module only declares and validates; :mod:`features.sources` decides where the tables come
from (a folder, a mapping file or a database). Any violation raises :class:`DataContractError`
naming the file, the column and the first bad rows. ``docs/data-contract.md`` is the user-facing
description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.definitions import DEFAULT_CONFIG, FeatureConfig
from features.redaction import redact

Kind = Literal["id", "str", "date", "datetime", "float", "int"]
#: Monthly recurring revenue above this (in any currency) is not a real account's.
MAX_MRR = 10_000_000

#: How many bad rows an error message quotes.
MAX_QUOTED_ROWS = 5


class DataContractError(ValueError):
    """Input data breaks the contract. The message names file, column and first bad rows (and
    never a secret of a URL it quotes)."""

    def __init__(self, file: str, message: str, column: str | None = None,
                 rows: list[int] | None = None):
        self.file, self.column, self.rows = file, column, rows or []
        where = f"{file}" + (f", column '{column}'" if column else "")
        shown = ""
        if self.rows:
            shown = f" (rows {', '.join(str(r) for r in self.rows[:MAX_QUOTED_ROWS])}"
            shown += ", ..." if len(self.rows) > MAX_QUOTED_ROWS else ""
            shown += ")"
        super().__init__(redact(f"{where}: {message}{shown}"))


@dataclass(frozen=True)
class Column:
    """One column of a table: its kind, whether it must be present, and its allowed values."""

    name: str
    kind: Kind
    required: bool = True
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    #: A date that may lie after today (a paid-through end, a booked renewal); any other date
    #: after today cannot be true.
    future_ok: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A table of the contract."""

    name: str
    columns: tuple[Column, ...]
    required: bool
    key: tuple[str, ...] = ()
    #: The column that dates a row, used for point-in-time filtering.
    time_column: str | None = None

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


ACCOUNTS = TableSpec(
    "accounts",
    (
        Column("account_id", "id"),
        Column("plan", "str", required=False, nullable=True),
        Column("seats", "int", required=False, nullable=True, min=0),
        Column("industry", "str", required=False, nullable=True),
        Column("segment", "str", required=False, nullable=True),
        Column("signup_date", "date", required=False, nullable=True),
        # The CSM who holds the account: shown and filtered on by the CS console, never a feature.
        Column("owner", "str", required=False, nullable=True),
    ),
    required=True,
    key=("account_id",),
)
SUBSCRIPTIONS = TableSpec(
    "subscriptions",
    (
        Column("account_id", "id"),
        Column("start_date", "date", future_ok=True),
        Column("end_date", "date", nullable=True, future_ok=True),
        Column("mrr", "float", required=False, nullable=True, min=0, max=MAX_MRR),
        # Months between renewals (1 = monthly, 12 = annual); gives the next renewal date.
        Column("billing_period_months", "int", required=False, nullable=True, min=1),
    ),
    required=True,
    key=("account_id", "start_date"),
    time_column="start_date",
)
USAGE_EVENTS = TableSpec(
    "usage_events",
    (
        Column("account_id", "id"),
        Column("timestamp", "datetime"),
        Column("event", "str"),
        Column("user_id", "str", required=False, nullable=True),
        Column("quantity", "float", required=False, nullable=True, min=0),
    ),
    required=False,
    time_column="timestamp",
)
TOUCHPOINTS = TableSpec(
    "touchpoints",
    (
        Column("account_id", "id"),
        Column("timestamp", "datetime"),
        Column("channel", "str"),
        Column("initiated_by", "str", choices=("company", "customer")),
        Column("resolved_at", "datetime", required=False, nullable=True),
        # 1 = the request was escalated (to engineering, management ...); only for customer requests.
        Column("escalated", "int", required=False, nullable=True, min=0, max=1),
    ),
    required=False,
    time_column="timestamp",
)
SURVEYS = TableSpec(
    "surveys",
    (
        Column("account_id", "id"),
        Column("timestamp", "datetime"),
        Column("kind", "str", choices=("nps", "csat")),
        # Empty score = the survey was sent and not answered (counts against the response rate).
        Column("score", "float", nullable=True),
    ),
    required=False,
    key=("account_id", "timestamp", "kind"),
    time_column="timestamp",
)
TABLES: tuple[TableSpec, ...] = (ACCOUNTS, SUBSCRIPTIONS, USAGE_EVENTS, TOUCHPOINTS, SURVEYS)
#: Valid score ranges per survey kind.
SCORE_RANGES = {"nps": (0, 10), "csat": (1, 5)}
#: Tables whose timestamps are activity: the latest of them dates the extract.
ACTIVITY_TABLES = ("usage_events", "touchpoints", "surveys")


@dataclass(frozen=True)
class ChurnSettings:
    """A data set's churn definition (a mapping file's ``churn:`` section); None = the defaults."""

    #: Last date the data is complete for (labels need their horizon to end on or before it).
    observed_until: pd.Timestamp | None = None
    #: Gap between subscriptions that is not churn.
    grace_days: int | None = None
    #: Suggested label horizon.
    horizon_days: int | None = None
    #: Where churn dates come from: "subscriptions" (spell ends) or "events" (a churn-event table,
    #: already turned into subscription ends by the mapping).
    source: str = "subscriptions"
    #: When the data was exported, when the mapping says so (else inferred from the activity).
    extract_date: pd.Timestamp | None = None


@dataclass(frozen=True)
class ExtractDate:
    """The day the data was exported, and where that date comes from (said to the user)."""

    date: pd.Timestamp
    source: str

    def __str__(self) -> str:
        return f"{self.date:%Y-%m-%d} ({self.source})"


@dataclass
class Tables:
    """The validated input tables. Optional tables that were absent are ``None``."""

    accounts: pd.DataFrame
    subscriptions: pd.DataFrame
    #: A pandas frame, or with ``--engine spark`` the events held by Spark
    #: (:class:`features.spark_events.SparkEvents`, already validated).
    usage_events: pd.DataFrame | Any | None = None
    touchpoints: pd.DataFrame | None = None
    surveys: pd.DataFrame | None = None
    source: str = "<memory>"
    files: dict[str, str] = field(default_factory=dict)
    #: Data-set specific features (key events, extra attributes, contact cadence).
    feature_config: FeatureConfig = DEFAULT_CONFIG
    #: The data set's churn definition, when a mapping chose one.
    churn: ChurnSettings = field(default_factory=ChurnSettings)
    #: Optional contract columns the input did not have at all, per table (they are filled with
    #: nulls; features that need them are null rather than zero).
    absent_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The data set's name (a mapping's ``name``); None for data in the contract's own shape.
    name: str | None = None
    #: What loading noticed and the user should know (files not read, a table in two forms ...).
    warnings: list[str] = field(default_factory=list)

    def extract_date(self) -> ExtractDate:
        """The day the data was exported: the mapping's ``extract_date``, else the day of the
        latest activity (usage, touchpoint or survey timestamp), else of the latest subscription
        start. A subscription end on or after it is a paid-through date, not a churn."""
        if self.churn.extract_date is not None:
            return ExtractDate(pd.Timestamp(self.churn.extract_date).normalize(),
                               "extract_date of the mapping")
        latest = [(last, spec.name) for spec in TABLES
                  if spec.name in ACTIVITY_TABLES and (frame := self.get(spec.name)) is not None
                  for col in spec.columns if col.kind in ("date", "datetime")
                  and len(frame) and pd.notna(last := time_span(frame, col.name)[1])]
        if latest:
            date, table = max(latest)
            return ExtractDate(date.normalize(), f"latest {table} timestamp")
        date = self.subscriptions["start_date"].max()
        if pd.isna(date):
            raise DataContractError(self.files.get("subscriptions", "subscriptions"),
                                    "no subscription start dates")
        return ExtractDate(date.normalize(), "latest subscription start; no activity table")

    def observed_until(self) -> pd.Timestamp:
        """The last day churn is known: the mapping's ``observed_until``, else the day before the
        extract date (ends on or after the extract date are paid-through dates)."""
        if self.churn.observed_until is not None:
            return pd.Timestamp(self.churn.observed_until).normalize()
        return self.extract_date().date - pd.Timedelta(days=1)

    def get(self, name: str) -> pd.DataFrame | None:
        return getattr(self, name)

    @property
    def available(self) -> list[str]:
        """Names of the tables that are present."""
        return [t.name for t in TABLES if self.get(t.name) is not None]

    def activity_start(self) -> pd.Timestamp:
        """The earliest timestamp of the event tables (usage, touchpoints, surveys); when none is
        present, the earliest subscription start. Features are only meaningful after it."""
        starts = [time_span(frame, spec.time_column)[0] for spec in TABLES[2:]
                  if (frame := self.get(spec.name)) is not None and len(frame)]
        starts = [s for s in starts if pd.notna(s)]
        if not starts:
            starts = [self.subscriptions["start_date"].min()]
        return min(starts).normalize()


def on_driver(frame: object) -> bool:
    """True for a pandas frame; False for a table held elsewhere (usage events on Spark), which
    was validated where it lives and answers only for its size, columns and time span."""
    return isinstance(frame, pd.DataFrame)


def time_span(frame: Any, column: str) -> tuple[Any, Any]:
    """Earliest and latest value of the time column ``column`` (NaT or None when empty)."""
    if on_driver(frame):
        return frame[column].min(), frame[column].max()
    return frame.span(column)


def validate_tables(tables: Tables) -> Tables:
    """Validate frames built in memory (e.g. by the generator or a test) like files on disk."""
    out = {}
    absent: dict[str, tuple[str, ...]] = {}
    for spec in TABLES:
        frame = tables.get(spec.name)
        if frame is None:
            if spec.required:
                raise DataContractError(spec.name, "required table missing")
            continue
        absent[spec.name] = tuple(sorted(set(tables.absent_columns.get(spec.name, ()))
                                         | set(absent_columns(spec, frame) if on_driver(frame)
                                               else ())))
        out[spec.name] = (validate_table(spec, frame, tables.files.get(spec.name, spec.name))
                          if on_driver(frame) else frame)
    result = Tables(**out, source=tables.source, files=tables.files,
                    feature_config=tables.feature_config, churn=tables.churn,
                    absent_columns=absent, name=tables.name, warnings=list(tables.warnings))
    check_references(result)
    check_extract_date(result)
    return result


def row_numbers(frame: pd.DataFrame, mask: pd.Series, file: str) -> list[int]:
    """Human row numbers of bad rows: CSV line numbers (header is line 1) or 0-based Parquet rows."""
    positions = [int(i) for i in mask.to_numpy().nonzero()[0][: MAX_QUOTED_ROWS + 1]]
    offset = 2 if ".csv" in file else 0
    return [p + offset for p in positions]


def _parse(spec: TableSpec, col: Column, values: pd.Series, file: str) -> pd.Series:
    present = values.notna()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        present &= values.astype(str).str.strip() != ""
    if col.kind in ("id", "str"):
        parsed = values.astype("string").str.strip()
        parsed = parsed.where(present, None)
    elif col.kind in ("date", "datetime"):
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = values
            if getattr(values.dt, "tz", None) is not None:
                parsed = values.dt.tz_convert("UTC").dt.tz_localize(None)
        else:
            # ISO 8601 only: "03/04/2024" is ambiguous (D/M or M/D) and must come with a mapping.
            parsed = pd.to_datetime(values.where(present, None), format="ISO8601",
                                    errors="coerce", utc=True).dt.tz_localize(None)
        bad = present & parsed.isna()
        if bad.any():
            example = values[bad].iloc[0]
            raise DataContractError(file, f"unparseable {col.kind} {example!r} (expected ISO 8601, "
                                    "e.g. 2024-03-31)", col.name, row_numbers(values, bad, file))
        parsed = parsed.astype("datetime64[us]")
        if col.kind == "date":
            parsed = parsed.dt.normalize()
    else:
        parsed = pd.to_numeric(values.where(present, None), errors="coerce")
        bad = present & parsed.isna()
        if bad.any():
            example = values[bad].iloc[0]
            raise DataContractError(file, f"not a number: {example!r}", col.name,
                                    row_numbers(values, bad, file))
        parsed = parsed.astype("float64")
        infinite = np.isinf(parsed)
        if infinite.any():
            raise DataContractError(file, f"not a finite number: {values[infinite].iloc[0]!r}",
                                    col.name, row_numbers(values, infinite, file))
        if col.kind == "int":
            frac = parsed.notna() & (parsed != parsed.round())
            if frac.any():
                raise DataContractError(file, "expected whole numbers", col.name,
                                        row_numbers(values, frac, file))
        for bound, bad in (("min", parsed < col.min if col.min is not None else None),
                           ("max", parsed > col.max if col.max is not None else None)):
            if bad is not None and bad.any():
                limit = col.min if bound == "min" else col.max
                word = "below" if bound == "min" else "above"
                raise DataContractError(file, f"value {parsed[bad].iloc[0]:g} {word} {limit:g}",
                                        col.name, row_numbers(values, bad, file))
    missing = parsed.isna()
    if not col.nullable and missing.any():
        raise DataContractError(file, "empty values are not allowed", col.name,
                                row_numbers(values, missing, file))
    if col.choices is not None:
        bad = parsed.notna() & ~parsed.isin(col.choices)
        if bad.any():
            raise DataContractError(file, f"unexpected value {parsed[bad].iloc[0]!r}; expected one "
                                    f"of {', '.join(col.choices)}", col.name,
                                    row_numbers(values, bad, file))
    return parsed


def absent_columns(spec: TableSpec, raw: pd.DataFrame) -> tuple[str, ...]:
    """Optional contract columns missing from ``raw``."""
    return tuple(c.name for c in spec.columns if not c.required and c.name not in raw.columns)


def validate_table(spec: TableSpec, raw: pd.DataFrame, file: str) -> pd.DataFrame:
    """Check and type one table; columns outside the contract are kept as they are."""
    raw = raw.reset_index(drop=True)
    if spec.required and raw.empty:
        raise DataContractError(file, f"the required table {spec.name} has no rows")
    missing = [c.name for c in spec.columns if c.required and c.name not in raw.columns]
    if missing:
        raise DataContractError(file, f"missing required column(s): {', '.join(missing)}; found "
                                f"{', '.join(map(str, raw.columns)) or 'no columns'}")
    out = raw.copy()
    for col in spec.columns:
        if col.name in raw.columns:
            out[col.name] = _parse(spec, col, raw[col.name], file)
        else:
            out[col.name] = pd.Series(pd.NA if col.kind in ("id", "str") else None,
                                      index=raw.index, dtype=_empty_dtype(col.kind))
    if spec.key:
        dup = out.duplicated(list(spec.key), keep="first")
        if dup.any():
            raise DataContractError(file, f"duplicate key ({', '.join(spec.key)})",
                                    ", ".join(spec.key), row_numbers(out, dup, file))
    _check_rules(spec, out, file)
    _check_not_future(spec, out, file)
    return out


def today() -> pd.Timestamp:
    """Today's date (UTC): rows dated after it cannot be true."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()


def _check_not_future(spec: TableSpec, frame: pd.DataFrame, file: str) -> None:
    """Dates after today are typos or placeholders (2099-...), except paid-through subscription
    ends and booked renewals; one day of slack absorbs time zones."""
    limit = today() + pd.Timedelta(days=1)
    for col in spec.columns:
        if col.kind in ("date", "datetime") and not col.future_ok:
            bad = frame[col.name].notna() & (frame[col.name] >= limit)
            if bad.any():
                raise DataContractError(
                    file, f"{frame[col.name][bad].iloc[0]:%Y-%m-%d} lies in the future (today is "
                    f"{limit - pd.Timedelta(days=1):%Y-%m-%d})", col.name,
                    row_numbers(frame, bad, file))


def _empty_dtype(kind: Kind) -> str:
    return {"id": "string", "str": "string", "date": "datetime64[us]",
            "datetime": "datetime64[us]", "float": "float64", "int": "float64"}[kind]


def _check_rules(spec: TableSpec, frame: pd.DataFrame, file: str) -> None:
    """Cross-column rules of the contract."""
    if spec.name == "subscriptions":
        bad = frame["end_date"].notna() & (frame["end_date"] < frame["start_date"])
        if bad.any():
            raise DataContractError(file, "end_date before start_date", "end_date",
                                    row_numbers(frame, bad, file))
    if spec.name == "touchpoints":
        bad = frame["resolved_at"].notna() & (frame["resolved_at"] < frame["timestamp"])
        if bad.any():
            raise DataContractError(file, "resolved_at before timestamp", "resolved_at",
                                    row_numbers(frame, bad, file))
    if spec.name == "surveys":
        for kind, (low, high) in SCORE_RANGES.items():
            bad = (frame["kind"] == kind) & frame["score"].notna()
            bad &= (frame["score"] < low) | (frame["score"] > high)
            if bad.any():
                raise DataContractError(
                    file, f"{kind} score {frame['score'][bad].iloc[0]:g} out of range "
                    f"{low}-{high}", "score", row_numbers(frame, bad.fillna(False), file))


def check_extract_date(tables: Tables) -> None:
    """No activity is dated after a declared extract date (the data cannot hold the future)."""
    declared = tables.churn.extract_date
    if declared is None:
        return
    limit = pd.Timestamp(declared).normalize() + pd.Timedelta(days=1)
    for spec in TABLES:
        frame = tables.get(spec.name)
        if spec.name not in ACTIVITY_TABLES or frame is None:
            continue
        if not on_driver(frame):
            last = time_span(frame, spec.time_column)[1]
            if last is not None and last >= limit:
                raise DataContractError(
                    tables.files.get(spec.name, spec.name), f"{last:%Y-%m-%d} is after the "
                    f"extract date {limit - pd.Timedelta(days=1):%Y-%m-%d}", spec.time_column)
            continue
        bad = frame[spec.time_column] >= limit
        if bad.any():
            file = tables.files.get(spec.name, spec.name)
            raise DataContractError(
                file, f"{frame[spec.time_column][bad].iloc[0]:%Y-%m-%d} is after the extract date "
                f"{limit - pd.Timedelta(days=1):%Y-%m-%d}", spec.time_column,
                row_numbers(frame, bad, file))


def check_references(tables: Tables) -> None:
    """Every account_id in another table must name an account in ``accounts``."""
    known = pd.Index(tables.accounts["account_id"].dropna().unique())
    for spec in TABLES[1:]:
        frame = tables.get(spec.name)
        if frame is None or not on_driver(frame):  # a table on Spark was checked there
            continue
        bad = ~frame["account_id"].isin(known)
        if bad.any():
            file = tables.files.get(spec.name, spec.name)
            raise DataContractError(
                file, f"account_id {frame['account_id'][bad].iloc[0]!r} is not in "
                f"{tables.files.get('accounts', 'accounts')}", "account_id",
                row_numbers(frame, bad, file))
