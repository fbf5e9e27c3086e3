"""Usage events read and validated on Spark, never collected to the driver.

The usage events are the table that grows with the business (billions of rows); the others hold
one row per account, subscription, contact or survey answer. With ``--engine spark`` a data
folder's usage events are read by Spark (a Parquet file or directory, partitioned or not, or CSV)
and checked against the contract there, in one pass over the data plus one join for the account
references; the features are then built from them on Spark (:mod:`features.pointintime`). The
driver keeps only :class:`SparkEvents`: the typed Spark frame and the few facts the rest of the
library asks of a table (its row count, its time span, the uses per event type).

A bad value is reported like the pandas path reports it (file, column, the first bad value), with
the number of bad rows instead of their row numbers: Spark reads files in parallel and has no
row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.contract import USAGE_EVENTS, Column, DataContractError

if TYPE_CHECKING:
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame, SparkSession

#: Spark's type for each contract column kind of the usage events.
SPARK_TYPES = {"id": "string", "str": "string", "datetime": "timestamp", "float": "double"}


@dataclass
class SparkEvents:
    """Validated usage events held by Spark: the contract's columns, typed, in ``frame``."""

    frame: DataFrame
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    #: The contract columns the file has (the others are null).
    given: tuple[str, ...] = ()
    columns: tuple[str, ...] = tuple(c.name for c in USAGE_EVENTS.columns)
    _uses: dict[str, float] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.rows

    def __contains__(self, column: object) -> bool:
        return column in self.columns

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def span(self, column: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """Earliest and latest ``timestamp`` (the table's only time column)."""
        if column != USAGE_EVENTS.time_column:
            raise KeyError(column)
        return self.first, self.last

    def event_uses(self) -> dict[str, float]:
        """Uses per event type (quantities summed, a missing quantity counts 1), computed once."""
        if self._uses is None:
            from pyspark.sql import functions as F

            rows = (self.frame.groupBy("event")
                    .agg(F.sum(F.coalesce("quantity", F.lit(1.0))).alias("uses")).collect())
            self._uses = {str(r["event"]): float(r["uses"]) for r in rows}
        return self._uses


def read_raw_events(session: SparkSession, path: Path) -> DataFrame:
    """The file or directory at ``path`` as Spark reads it: Parquet typed, CSV as strings."""
    name = path.name
    if name.endswith((".csv", ".csv.gz")):
        return session.read.csv(str(path), header=True, inferSchema=False, mode="FAILFAST")
    return session.read.parquet(str(path))


def read_events(session: SparkSession, path: Path, accounts: pd.DataFrame,
                accounts_file: str = "accounts") -> SparkEvents:
    """Read the usage events at ``path`` on Spark and check them against the contract: required
    columns present, every value parseable and in range, every account in ``accounts``.

    Raises:
        DataContractError: names the file, the column and the first bad value.
    """
    file = path.name
    try:
        raw = read_raw_events(session, path)
        names = list(raw.columns)
    except Exception as exc:  # Spark raises its own analysis errors for unreadable input
        raise DataContractError(file, f"Spark cannot read it ({type(exc).__name__})") from exc
    missing = [c.name for c in USAGE_EVENTS.columns if c.required and c.name not in names]
    if missing:
        raise DataContractError(file, f"missing required column(s): {', '.join(missing)}; found "
                                f"{', '.join(names) or 'no columns'}")
    typed, facts = _check_values(raw, file)
    _check_accounts(session, typed, accounts, file, accounts_file)
    return SparkEvents(typed, rows=facts["rows"], first=facts["first"], last=facts["last"],
                       given=tuple(c.name for c in USAGE_EVENTS.columns if c.name in names))


def _typed(raw: DataFrame, col: Column) -> SparkColumn:
    """The contract column ``col``: parsed to its type; an absent optional column is null; a
    blank string is null, as in the pandas path."""
    from pyspark.sql import functions as F

    kind = SPARK_TYPES[col.kind]
    if col.name not in raw.columns:
        return F.lit(None).cast(kind).alias(col.name)
    value = F.col(col.name)
    if kind == "string":
        value = F.trim(value.cast("string"))
        value = F.when(value != "", value)
    elif dict(raw.dtypes)[col.name] == "string":
        value = F.when(F.trim(value) != "", F.trim(value)).try_cast(kind)
    else:
        value = value.try_cast(kind)
    return value.alias(col.name)


def _checks(present_columns: list[str]) -> list[tuple[str, str, SparkColumn, SparkColumn]]:
    """(column, message, bad-row condition, value to quote) for every contract check, over a
    frame holding each given column twice: as read (``raw_<name>``) and typed (``<name>``)."""
    from pyspark.sql import functions as F

    out = []
    for col in USAGE_EVENTS.columns:
        if col.name not in present_columns:
            continue
        given, value = F.col(f"raw_{col.name}").cast("string"), F.col(col.name)
        present = given.isNotNull() & (F.trim(given) != "")
        if col.kind == "datetime":
            out.append((col.name, "unparseable datetime {!r} (expected ISO 8601, e.g. 2024-03-31)",
                        present & value.isNull(), given))
        if col.kind == "float":
            out += [(col.name, "not a number: {!r}", present & value.isNull(), given),
                    (col.name, "not a finite number: {!r}",
                     value.isin(float("inf"), float("-inf")), given)]
            if col.min is not None:
                out.append((col.name, f"value {{}} below {col.min:g}", value < col.min, value))
            if col.max is not None:
                out.append((col.name, f"value {{}} above {col.max:g}", value > col.max, value))
        if not col.nullable:
            out.append((col.name, "empty values are not allowed", value.isNull(), F.lit("")))
    return out


def _check_values(raw: DataFrame, file: str) -> tuple[DataFrame, dict[str, Any]]:
    """The typed events, and from one pass over them the row count and time span. Raises on the
    first check (in column order) that a row fails, quoting a bad value and the count."""
    from pyspark.sql import functions as F

    given = [c.name for c in USAGE_EVENTS.columns if c.name in raw.columns]
    typed = [_typed(raw, col) for col in USAGE_EVENTS.columns]
    both = raw.select(*[F.col(c).alias(f"raw_{c}") for c in given], *typed)
    checks = _checks(given)
    aggs = [F.count(F.lit(1)).alias("rows"),
            F.unix_micros(F.min("timestamp")).alias("first"),
            F.unix_micros(F.max("timestamp")).alias("last")]
    for i, (_, _, bad, example) in enumerate(checks):
        aggs += [F.count(F.when(bad, 1)).alias(f"bad{i}"),
                 F.first(F.when(bad, example.cast("string")), ignorenulls=True).alias(f"ex{i}")]
    try:
        result = both.agg(*aggs).first().asDict()
    except Exception as exc:  # a row Spark cannot split (CSV) or a damaged Parquet file
        raise DataContractError(file, f"Spark cannot read every row ({type(exc).__name__}): a "
                                "malformed CSV line or a damaged Parquet file") from exc
    for i, (column, message, _, _) in enumerate(checks):
        if result[f"bad{i}"]:
            example = result[f"ex{i}"]
            text = message.format(f"{float(example):g}" if "{}" in message else example)
            count = result[f"bad{i}"]
            raise DataContractError(file, f"{text} ({count:,} bad row{'s' * (count != 1)})",
                                    column)
    facts = {"rows": int(result["rows"]), "first": _timestamp(result["first"]),
             "last": _timestamp(result["last"])}
    return raw.select(*typed), facts


def _timestamp(micros: int | None) -> pd.Timestamp | None:
    return None if micros is None else pd.Timestamp(micros, unit="us")


def _check_accounts(session: SparkSession, events: DataFrame, accounts: pd.DataFrame,
                    file: str, accounts_file: str) -> None:
    """Every event's account is in ``accounts`` (a broadcast anti-join; quotes one stray id)."""
    from pyspark.sql import functions as F

    known = session.createDataFrame(
        pd.DataFrame({"account_id": accounts["account_id"].dropna().astype(str).unique()}))
    stray = (events.select("account_id")
             .join(F.broadcast(known), "account_id", "left_anti").limit(1).collect())
    if stray:
        raise DataContractError(file, f"account_id {stray[0]['account_id']!r} is not in "
                                f"{accounts_file}", "account_id")
