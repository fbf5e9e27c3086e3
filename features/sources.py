"""Where the input tables come from: a folder, a mapping file or a database URL.

:func:`load_tables` is the one entry point every command and the Python API use:

* a folder holding one CSV or Parquet file per contract table (``accounts.csv``,
  ``subscriptions.parquet`` ...);
* a mapping file (``*.yaml``, :mod:`features.mapping`) that turns someone else's tables into the
  contract, with its own data location;
* an Ibis connection URL of a database holding the contract's tables
  (``postgresql://user@host:5432/db``).

Whatever the source, the result is validated :class:`~features.contract.Tables`; any violation
raises :class:`~features.contract.DataContractError` naming the file, column and rows.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import re
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import (
    TABLES,
    DataContractError,
    Tables,
    absent_columns,
    check_references,
    validate_table,
)
from features.mapping import Mapping, apply_mapping, contract_mapping, read_mapping, shipped_mapping
from features.redaction import redact
from features.snapshot import Snapshot, apply_snapshot

#: The suffixes we read, in the order we look for them.
SUFFIXES = (".parquet", ".csv", ".csv.gz")
#: Files in a data folder that look like data (named in a warning when they are not read).
DATA_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv", ".json", ".jsonl", ".xlsx", ".txt")
#: Usual names of the contract's tables in other exports (to suggest a mapping).
ALIASES = {"events": "usage_events", "usage": "usage_events", "activity": "usage_events",
           "feature_usage": "usage_events", "tickets": "touchpoints",
           "support_tickets": "touchpoints", "interactions": "touchpoints",
           "customers": "accounts", "account": "accounts", "subscription": "subscriptions",
           "billing": "subscriptions", "nps": "surveys", "csat": "surveys",
           "responses": "surveys"}


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and re.match(r"^[a-z][a-z0-9+]*://", location) is not None


def find_table_file(data_dir: Path, name: str) -> Path | None:
    """The file holding table ``name`` in ``data_dir`` (Parquet preferred), or None."""
    for suffix in SUFFIXES:
        path = data_dir / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def read_raw(path: Path) -> pd.DataFrame:
    """Read a table file as-is: Parquet typed, CSV (optionally gzipped) as strings so that
    validation sees what was written.

    CSV is read strictly, by DuckDB: every row must have the header's number of fields (a file
    cut in the middle of a row is refused), text must be UTF-8, quotes must close.

    Raises:
        DataContractError: the file cannot be read; names the file and, for CSV, the line.
    """
    if path.stat().st_size == 0:
        raise DataContractError(path.name, "the file is empty (0 bytes)")
    if path.name.endswith(".parquet"):
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataContractError(path.name, f"not a readable Parquet file "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    return _read_csv(path)


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            first = fh.readline()
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataContractError(path.name, "not UTF-8 text (save the file as UTF-8)",
                                rows=[1]) from exc
    except (OSError, EOFError) as exc:
        raise DataContractError(path.name, f"cannot read the file: {exc}") from exc
    return next(csv.reader([text.rstrip("\r\n")]), [])


def _read_csv(path: Path) -> pd.DataFrame:
    import duckdb

    header = _csv_header(path)
    if not header or not any(h.strip() for h in header):
        raise DataContractError(path.name, "no header line")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise DataContractError(path.name, f"the header repeats column(s) {', '.join(dup)}",
                                rows=[1])
    con = duckdb.connect()
    try:
        rel = con.read_csv(str(path), header=True, delimiter=",", quotechar='"',
                           escapechar='"', auto_detect=False, strict_mode=True,
                           null_padding=False, columns={h: "VARCHAR" for h in header})
        return rel.df()
    except duckdb.Error as exc:
        raise _csv_error(path, str(exc)) from exc
    finally:
        con.close()


def _csv_error(path: Path, text: str) -> DataContractError:
    """DuckDB's CSV error as a message that names the file, the line and what is wrong."""
    line = re.search(r"CSV Error on Line: (\d+)", text)
    rows = [int(line.group(1))] if line else []
    columns = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if columns:
        reason = (f"the row has {columns.group(2)} fields where the header has "
                  f"{columns.group(1)} (a file cut off or a stray delimiter)")
    elif "unicode" in text.lower() or "utf-8" in text.lower():
        reason = "not UTF-8 text (save the file as UTF-8)"
    elif "unterminated quote" in text.lower():
        reason = "a quoted value is not closed"
    else:
        reason = f"cannot be read as CSV: {text.splitlines()[0]}"
    return DataContractError(path.name, reason, rows=rows)


class TableReader:
    """Reads source tables from a folder or a database, once each."""

    def __init__(self, location: str | Path):
        self.location = location
        self.cache: dict[str, tuple[pd.DataFrame, str]] = {}
        self.con = None
        if is_url(location):
            import ibis

            try:
                self.con = ibis.connect(str(location))
            except Exception as exc:  # driver errors vary by backend
                raise DataContractError(redact(location),
                                        redact(f"cannot connect: {exc}".splitlines()[0])) from exc
        elif not Path(location).is_dir():
            raise DataContractError(str(location), "data directory does not exist")

    def tables(self) -> dict[str, set[str]]:
        """The database's tables and their columns (databases only)."""
        if self.con is None:
            raise TypeError("only a database lists its tables; a folder is read by name")
        return {name: set(self.con.table(name).columns) for name in self.con.list_tables()}

    def read(self, name: str) -> tuple[pd.DataFrame, str]:
        """``(frame, label for messages)`` of source table ``name``."""
        if name in self.cache:
            return self.cache[name]
        if self.con is not None:
            label = f"{name} ({redact(self.location)})"
            try:
                frame = self.con.table(name).to_pandas()
            except Exception as exc:
                raise DataContractError(label, redact(f"cannot read table: {exc}".splitlines()[0])
                                        ) from exc
        else:
            path = _find(Path(self.location), name)
            label = path.name
            frame = read_raw(path)
        self.cache[name] = (frame, label)
        return frame, label


def _find(data_dir: Path, name: str) -> Path:
    candidates = [data_dir / name] + [data_dir / f"{name}{s}" for s in SUFFIXES]
    for path in candidates:
        if path.is_file():
            return path
    raise DataContractError(str(data_dir), f"source table {name!r} not found (looked for "
                            f"{', '.join(p.name for p in candidates)})")


def load_tables(location: str | Path, spark: Any = None) -> Tables:
    """Read and validate the contract tables at ``location``: a data folder, a mapping file
    (``*.yaml``) or an Ibis database URL (see the module docstring).

    Raises:
        DataContractError: a required table or column is missing, or a value breaks the contract
            (or the mapping declares a snapshot export, which has no contract tables).
    """
    data = load_data(location, spark)
    if isinstance(data, Snapshot):
        raise DataContractError(str(location), "a snapshot export (one row per account, no "
                                "dates) has no event-log tables: it can be checked, trained and "
                                "served (churn check, train, serve), not used for point-in-time "
                                "features (docs/snapshot-exports.md)")
    return data


def load_data(location: str | Path, spark: Any = None) -> Tables | Snapshot:
    """:func:`load_tables`, or the :class:`~features.snapshot.Snapshot` a snapshot mapping
    declares (the commands that train and check take both). With ``spark`` (a SparkSession), a
    data folder's usage events are read and validated by Spark and stay there
    (:mod:`features.spark_events`); mappings and databases are read as without it."""
    if is_url(location):
        return load_database(str(location))
    path = Path(location)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_mapped(path)
    return load_folder(path, spark)


def dataset_name(location: str | Path) -> str | None:
    """The name of the data set at ``location`` without loading it: a mapping file's ``name``;
    None for data in the contract's own shape (a folder or a database)."""
    if is_url(location):
        return None
    path = Path(location)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return read_mapping(path).name or None
    return None


def load_folder(data_dir: Path, spark: Any = None) -> Tables:
    """The contract tables of a folder holding one file per table (Parquet may be a directory of
    files, partitioned or not).

    Files that are not a contract table, a table present in two forms and optional tables with
    no rows are named in ``tables.warnings``. With ``spark`` the usage events are read and
    validated on Spark instead (after the accounts their ids are checked against).
    """
    if not data_dir.is_dir():
        raise DataContractError(str(data_dir), "data directory does not exist")
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    absent: dict[str, tuple[str, ...]] = {}
    warnings = _unread_files(data_dir)
    for spec in TABLES:
        found = [data_dir / f"{spec.name}{s}" for s in SUFFIXES if (data_dir / f"{spec.name}{s}").exists()]
        if not found:
            if spec.required:
                expected = " or ".join(f"{spec.name}{s}" for s in SUFFIXES)
                raise DataContractError(str(data_dir), f"required table missing: expected {expected}")
            continue
        path = found[0]
        if len(found) > 1:
            warnings.append(f"{spec.name}: read {path.name}; "
                            f"{', '.join(p.name for p in found[1:])} also there, not read")
        if spark is not None and spec.name == "usage_events":
            from features.spark_events import read_events

            events = read_events(spark, path, frames["accounts"], files["accounts"])
            if events.empty:
                warnings.append(f"{path.name} has no rows: {spec.name} is treated as absent")
                continue
            frames[spec.name], files[spec.name] = events, path.name
            absent[spec.name] = tuple(c.name for c in spec.columns if c.name not in events.given)
            continue
        raw = read_raw(path)
        if raw.empty and not spec.required:
            warnings.append(f"{path.name} has no rows: {spec.name} is treated as absent")
            continue
        absent[spec.name] = absent_columns(spec, raw)
        frames[spec.name] = validate_table(spec, raw, path.name)
        files[spec.name] = path.name
    tables = Tables(**frames, source=str(data_dir), files=files, absent_columns=absent,
                    warnings=warnings)
    check_references(tables)
    return tables


def _unread_files(data_dir: Path) -> list[str]:
    """A warning for each data-looking file of the folder that is not a contract table."""
    known = {f"{spec.name}{s}" for spec in TABLES for s in SUFFIXES}
    out = []
    for path in sorted(data_dir.iterdir()):
        if not path.is_file() or path.name in known or path.name.startswith("."):
            continue
        if not path.name.lower().endswith(DATA_SUFFIXES + tuple(f"{s}.gz" for s in DATA_SUFFIXES)):
            continue
        stem = path.name.split(".")[0].lower()
        guess = ALIASES.get(stem) or next(iter(difflib.get_close_matches(
            stem, [t.name for t in TABLES], n=1, cutoff=0.6)), None)
        hint = (f"if it holds {guess}, map it to that table with a mapping file"
                if guess else "to use it, map it with a mapping file")
        out.append(f"{path.name} is not a table of the contract and was not read; {hint} "
                   "(docs/mappings.md)")
    return out


def load_mapped(mapping: str | Path | Mapping, data: str | Path | None = None
                ) -> Tables | Snapshot:
    """Load a data set through a mapping into validated contract tables (a
    :class:`~features.snapshot.Snapshot` for a snapshot mapping).

    Args:
        mapping: a mapping file (YAML), the name of a shipped mapping (``"sim-dev"``,
            ``"ravenstack-saas"``) or a parsed :class:`~features.mapping.Mapping`.
        data: the data directory or an Ibis connection URL (``postgresql://user@host/db``);
            default the mapping's ``data`` (a directory relative to the mapping file).

    Raises:
        DataContractError: the mapping or the data breaks the format; names file, column, rows.
    """
    base = Path.cwd()
    if not isinstance(mapping, Mapping):
        path = shipped_mapping(mapping)
        base = path.resolve().parent
        mapping = read_mapping(path)
    if data is None:
        if mapping.data is None:
            raise DataContractError(mapping.name, "no data location: pass one or set 'data' in "
                                    "the mapping")
        data = mapping.data if is_url(mapping.data) else base / mapping.data
    source = TableReader(data if is_url(data) else Path(data))
    if mapping.snapshot is not None:
        return apply_snapshot(mapping.snapshot, source, name=mapping.name,
                              data_label=redact(data))
    return apply_mapping(mapping, source, redact(data))


def load_database(url: str, mapping: str | Path | Mapping | None = None
                  ) -> Tables | Snapshot:
    """Tables from a database reached through an Ibis URL (e.g. ``postgresql://u@host:5432/db``).

    Without a mapping the database holds the contract's tables under their own names
    (``accounts``, ``subscriptions`` and any of the optional ones).
    """
    if mapping is not None:
        return load_mapped(mapping, url)
    source = TableReader(url)
    present = source.tables()
    for spec in TABLES:
        if spec.required and spec.name not in present:
            raise DataContractError(redact(url), f"required table missing: {spec.name}")
    return apply_mapping(contract_mapping(present), source, redact(url))
