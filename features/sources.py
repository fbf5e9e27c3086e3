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

import re
from pathlib import Path

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

#: The suffixes we read, in the order we look for them.
SUFFIXES = (".parquet", ".csv", ".csv.gz")
#: CSV files above this size are read by DuckDB (much faster than pandas for big files).
DUCKDB_CSV_BYTES = 5_000_000


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
    """Read a table file as-is (CSV as strings, so that validation sees what was written)."""
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.stat().st_size >= DUCKDB_CSV_BYTES:
        import duckdb

        con = duckdb.connect()
        try:
            return con.read_csv(str(path), all_varchar=True, header=True).df()
        finally:
            con.close()
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


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


def load_tables(location: str | Path) -> Tables:
    """Read and validate the contract tables at ``location``: a data folder, a mapping file
    (``*.yaml``) or an Ibis database URL (see the module docstring).

    Raises:
        DataContractError: a required table or column is missing, or a value breaks the contract.
    """
    if is_url(location):
        return load_database(str(location))
    path = Path(location)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_mapped(path)
    return load_folder(path)


def load_folder(data_dir: Path) -> Tables:
    """The contract tables of a folder holding one file per table."""
    if not data_dir.is_dir():
        raise DataContractError(str(data_dir), "data directory does not exist")
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    absent: dict[str, tuple[str, ...]] = {}
    for spec in TABLES:
        path = find_table_file(data_dir, spec.name)
        if path is None:
            if spec.required:
                expected = " or ".join(f"{spec.name}{s}" for s in SUFFIXES)
                raise DataContractError(str(data_dir), f"required table missing: expected {expected}")
            continue
        raw = read_raw(path)
        absent[spec.name] = absent_columns(spec, raw)
        frames[spec.name] = validate_table(spec, raw, path.name)
        files[spec.name] = path.name
    tables = Tables(**frames, source=str(data_dir), files=files, absent_columns=absent)
    check_references(tables)
    return tables


def load_mapped(mapping: str | Path | Mapping, data: str | Path | None = None) -> Tables:
    """Load a data set through a mapping into validated contract tables.

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
    return apply_mapping(mapping, source, redact(data))


def load_database(url: str, mapping: str | Path | Mapping | None = None) -> Tables:
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
    return apply_mapping(contract_mapping(redact(url), present), source, redact(url))
