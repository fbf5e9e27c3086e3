"""Bring your own data: a YAML mapping turns someone else's tables into the input contract.

A mapping file names, for each contract table, where its rows come from (a file in a data directory,
or a table in a database reached through an Ibis connection URL), which source column feeds each
contract column and how values are converted (date formats such as D/M/YYYY, value maps for
booleans or labels, constants). It also sets the data set's feature settings (key events, extra
account attributes, contact cadence) and its churn definition. ``docs/mappings.md`` describes the
format; ``features/mappings/`` holds worked examples (``sim-dev.yaml``, ``ravenstack-saas.yaml``).

This module is the format and its application to source tables read by a
:class:`~features.sources.TableReader`; :mod:`features.sources` decides where the data comes from
(``load_tables`` / ``load_mapped``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.contract import (
    TABLES,
    ChurnSettings,
    Column,
    DataContractError,
    Tables,
    TableSpec,
    absent_columns,
    check_extract_date,
    check_references,
    row_numbers,
    validate_table,
)
from features.definitions import AccountAttribute, FeatureConfig
from features.snapshot import SnapshotMap

#: Worked mappings shipped with the package.
MAPPINGS_DIR = Path(__file__).parent / "mappings"
_SPECS = {spec.name: spec for spec in TABLES}
#: Dated churn events, for churn definitions that come from such a table.
CHURN_EVENTS = TableSpec("churn_events", (Column("account_id", "id"), Column("churn", "date")),
                         required=False)


class ColumnMap(BaseModel):
    """How one output column is made: from a source column or a constant, then converted."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(None, alias="from", description="source column")
    value: Any = Field(None, description="a constant for every row (instead of 'from')")
    format: str | None = Field(None, description="strptime date format, e.g. '%d/%m/%Y'")
    map: dict[str, Any] | None = Field(None, description="value -> new value; unmapped is an error")
    lookup: Lookup | None = None

    def model_post_init(self, __context: Any) -> None:
        if (self.source is None) == (self.value is None):
            raise ValueError("give exactly one of 'from' (a source column) or 'value' (a constant)")


class Lookup(BaseModel):
    """Replace a value by a column of another source table, e.g. subscription_id -> account_id."""

    model_config = ConfigDict(extra="forbid")
    table: str
    key: str
    value: str


class TableMap(BaseModel):
    """Where one contract table comes from."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(alias="from", description="file stem/name in the data directory, or a "
                        "database table")
    columns: dict[str, str | ColumnMap]
    #: Identical rows (e.g. events truncated to dates) become one row whose quantity is their count.
    collapse_duplicates: bool = False
    #: Rows repeating a key of the contract: "error" (default) or keep the "first"/"last" of them.
    duplicate_keys: Literal["error", "first", "last"] = "error"

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("columns must map output column names to source columns")
        return value

    def column(self, name: str) -> ColumnMap:
        spec = self.columns[name]
        return ColumnMap(**{"from": spec}) if isinstance(spec, str) else spec


class ChurnMap(BaseModel):
    """The churn definition."""

    model_config = ConfigDict(extra="forbid")
    #: "subscriptions": a spell of subscriptions ends = churn; "events": dated churn events in
    #: another table (reactivations start a new spell).
    source: Literal["subscriptions", "events"] = Field("subscriptions", alias="from")
    grace_days: int | None = Field(None, ge=0)
    horizon_days: int | None = Field(None, gt=0)
    #: The last day churn is known [default: the extract date].
    observed_until: str | None = None
    #: For source "events": the table and its account and date columns.
    table: str | None = None
    account_id: str | ColumnMap | None = None
    date: str | ColumnMap | None = None


class FeaturesMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_events: list[str] = []
    key_event_windows: list[int] = [30]
    attributes: list[AccountAttribute | dict[str, Any]] = []
    check_in_days: int = 30
    review_days: int = 91
    review_channels: list[str] = ["qbr", "meeting", "review"]

    def config(self) -> FeatureConfig:
        attrs = tuple(a if isinstance(a, AccountAttribute) else AccountAttribute(**a)
                      for a in self.attributes)
        return FeatureConfig(tuple(self.key_events), tuple(self.key_event_windows), attrs,
                             self.check_in_days, self.review_days, tuple(self.review_channels))


class Mapping(BaseModel):
    """A mapping file."""

    model_config = ConfigDict(extra="forbid")
    #: The data set's name: its models are registered under it.
    name: str = Field("mapped", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    description: str = ""
    #: Default data location: a directory (relative to the mapping file) or an Ibis URL.
    data: str | None = None
    #: The day the data was exported [default: the day of its latest activity].
    extract_date: str | None = None
    tables: dict[str, TableMap] = {}
    features: FeaturesMap = FeaturesMap()
    churn: ChurnMap = ChurnMap()
    #: A snapshot export (one row per account with a churned flag) instead of ``tables``:
    #: :mod:`features.snapshot`.
    snapshot: SnapshotMap | None = None

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, value: dict[str, TableMap]) -> dict[str, TableMap]:
        unknown = sorted(set(value) - set(_SPECS))
        if unknown:
            raise ValueError(f"unknown table(s) {', '.join(unknown)}; the contract has "
                             f"{', '.join(_SPECS)}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Mapping:
        if self.snapshot is not None:
            extra = [k for k in ("tables", "features", "churn", "extract_date")
                     if k in self.model_fields_set]
            if extra:
                raise ValueError(f"a snapshot mapping has no {', '.join(extra)} section: its "
                                 "columns are declared under snapshot")
            return self
        for name in ("accounts", "subscriptions"):
            if name not in self.tables:
                raise ValueError(f"the required table {name!r} is not mapped (or declare a "
                                 "snapshot export under snapshot:)")
        return self


ColumnMap.model_rebuild()


def read_mapping(path: str | Path) -> Mapping:
    """Read and check a mapping file.

    Raises:
        DataContractError: the file is missing, not YAML, or breaks the mapping format.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataContractError(str(path), f"cannot read mapping: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise DataContractError(str(path), f"not valid YAML: {exc}") from exc
    try:
        return Mapping.model_validate(raw or {})
    except ValidationError as exc:
        errors = exc.errors()
        # In "a column name or a {from: ...} spec" unions, the spec's own complaint says more.
        shown = [e for e in errors if e["type"] != "string_type"] or errors
        text = "; ".join(
            f"at {'.'.join(str(p) for p in e['loc'] if p not in ('str', 'ColumnMap')) or 'top'}: "
            f"{e['msg']}" for e in shown[:3])
        raise DataContractError(str(path), f"invalid mapping {text}") from exc


class TableReader(Protocol):
    """Reads a source table by name (``features.sources`` has one for folders and databases)."""

    def read(self, name: str) -> tuple[pd.DataFrame, str]:
        """``(frame, label for messages)`` of source table ``name``."""
        ...


def shipped_mapping(name: str | Path) -> Path:
    """The path of a mapping file, or of the shipped mapping of that name (``"sim-dev"``)."""
    path = Path(name)
    if not path.exists() and (MAPPINGS_DIR / f"{name}.yaml").exists():
        return MAPPINGS_DIR / f"{name}.yaml"
    return path


def _convert(col: ColumnMap, frame: pd.DataFrame, label: str, out_name: str,
             source: TableReader) -> pd.Series:
    if col.value is not None:
        return pd.Series([col.value] * len(frame), index=frame.index, dtype=object)
    if col.source not in frame.columns:
        raise DataContractError(label, f"column {col.source!r} (for {out_name!r}) not found; "
                                f"found {', '.join(map(str, frame.columns))}", col.source)
    values = frame[col.source]
    if col.lookup is not None:
        other, other_label = source.read(col.lookup.table)
        for c in (col.lookup.key, col.lookup.value):
            if c not in other.columns:
                raise DataContractError(other_label, f"lookup column {c!r} not found", c)
        table = other.drop_duplicates(col.lookup.key).set_index(col.lookup.key)[col.lookup.value]
        looked = values.map(table)
        bad = values.notna() & looked.isna()
        if bad.any():
            raise DataContractError(label, f"{values[bad].iloc[0]!r} not found in "
                                    f"{other_label} column {col.lookup.key!r}", col.source,
                                    row_numbers(frame, bad, label))
        values = looked
    if col.map is not None:
        text = values.astype("string").str.strip()
        known = {str(k): v for k, v in col.map.items()}
        bad = text.notna() & (text != "") & ~text.isin(list(known))
        if bad.any():
            raise DataContractError(label, f"value {text[bad].iloc[0]!r} has no entry in the "
                                    f"mapping's 'map' ({', '.join(known)})", col.source,
                                    row_numbers(frame, bad, label))
        values = pd.Series([known.get(v) if isinstance(v, str) and v else None for v in text],
                           index=frame.index, dtype=object)
    if col.format is not None:
        text = values.astype("string").str.strip()
        present = text.notna() & (text != "")
        parsed = pd.to_datetime(text.where(present, None), format=col.format, errors="coerce")
        bad = present & parsed.isna()
        if bad.any():
            raise DataContractError(label, f"date {text[bad].iloc[0]!r} does not match the "
                                    f"format {col.format!r}", col.source,
                                    row_numbers(frame, bad, label))
        values = parsed
    return values


def _map_table(name: str, spec: TableMap, source: TableReader
               ) -> tuple[pd.DataFrame, str, tuple[str, ...]]:
    frame, label = source.read(spec.source)
    out = pd.DataFrame(index=frame.index)
    for out_name in spec.columns:
        out[out_name] = _convert(spec.column(out_name), frame, label, out_name, source)
    contract = _SPECS[name]
    absent = absent_columns(contract, out)
    for col in contract.columns:  # a nullable column the source lacks is simply empty
        if col.required and col.nullable and col.name not in out.columns:
            out[col.name] = None
    if spec.duplicate_keys != "error" and contract.key:
        present = [k for k in contract.key if k in out.columns]
        out = out.loc[~out.duplicated(present, keep=spec.duplicate_keys)]
    typed = validate_table(contract, out, label)
    if spec.collapse_duplicates:
        typed = _collapse(typed)
    return typed, label, absent


def _collapse(frame: pd.DataFrame) -> pd.DataFrame:
    """Identical usage rows -> one row whose quantity is the sum of theirs (empty = 1)."""
    keys = [c for c in frame.columns if c != "quantity"]
    qty = frame["quantity"].fillna(1.0)
    out = (frame.assign(quantity=qty).groupby(keys, sort=False, dropna=False, observed=True)
           ["quantity"].sum().reset_index())
    return out.sort_values(["account_id", "timestamp"], kind="stable").reset_index(drop=True)


def _churn_from_events(mapping: ChurnMap, subs: pd.DataFrame, source: TableReader) -> pd.DataFrame:
    """Subscription ends rewritten from dated churn events.

    Each subscription ends at the first churn event after its start (or stays open when none
    follows), so each account's spells run from a (re)activation to a churn event.
    """
    if mapping.table is None or mapping.account_id is None or mapping.date is None:
        raise DataContractError("mapping", "churn from events needs 'table', 'account_id' and "
                                "'date'")
    frame, label = source.read(mapping.table)
    acc = _convert(_as_col(mapping.account_id), frame, label, "account_id", source)
    date = _convert(_as_col(mapping.date), frame, label, "churn date", source)
    events = validate_table(CHURN_EVENTS, pd.DataFrame({"account_id": acc, "churn": date}), label)
    events = events.drop_duplicates()
    events = events.sort_values("churn", kind="stable")
    subs = subs.reset_index(drop=True).assign(_row=lambda f: range(len(f)))
    ordered = subs.sort_values("start_date", kind="stable")
    # The first churn event strictly after each subscription's start (a range merge, by account).
    merged = pd.merge_asof(ordered, events, left_on="start_date", right_on="churn",
                           by="account_id", direction="forward", allow_exact_matches=False)
    subs = merged.sort_values("_row").reset_index(drop=True)
    subs["end_date"] = subs["churn"].astype("datetime64[us]")
    return subs.drop(columns=["churn", "_row"])


def _as_col(spec: str | ColumnMap) -> ColumnMap:
    return ColumnMap(**{"from": spec}) if isinstance(spec, str) else spec


def apply_mapping(mapping: Mapping, source: TableReader, data_label: str) -> Tables:
    """The validated contract tables ``mapping`` makes of the source tables ``source`` reads.

    Returns:
        Tables carrying the mapping's feature settings (``tables.feature_config``) and churn
        definition (``tables.churn``); ``data_label`` (redacted) is their ``source``.

    Raises:
        DataContractError: the mapping or the data breaks the format; names file, column, rows.
    """
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, str] = {}
    absent: dict[str, tuple[str, ...]] = {}
    warnings: list[str] = []
    for name, spec in mapping.tables.items():
        frame, label, missing = _map_table(name, spec, source)
        if frame.empty and not _SPECS[name].required:
            warnings.append(f"{label} has no rows: {name} is treated as absent")
            continue
        frames[name], files[name], absent[name] = frame, label, missing
    churn = mapping.churn
    if churn.source == "events":
        frames["subscriptions"] = validate_table(
            _SPECS["subscriptions"],
            _churn_from_events(churn, frames["subscriptions"], source), files["subscriptions"])
    try:
        config = mapping.features.config()
    except (ValueError, TypeError) as exc:
        raise DataContractError(mapping.name, f"invalid features section: {exc}") from exc
    _check_key_events(config, frames.get("usage_events"), files.get("usage_events", mapping.name))
    observed = pd.Timestamp(churn.observed_until) if churn.observed_until else None
    extract = pd.Timestamp(mapping.extract_date) if mapping.extract_date else None
    tables = Tables(**frames, source=data_label, files=files, feature_config=config,
                    churn=ChurnSettings(observed, churn.grace_days, churn.horizon_days,
                                        churn.source, extract),
                    absent_columns=absent, name=mapping.name or None, warnings=warnings)
    check_references(tables)
    check_extract_date(tables)
    return tables


def _check_key_events(config: FeatureConfig, usage: pd.DataFrame | None, label: str) -> None:
    """Every declared key event occurs in the usage events (a typo would make a dead feature)."""
    if not config.key_events:
        return
    seen = set(usage["event"].dropna().unique()) if usage is not None else set()
    unknown = [e for e in config.key_events if e not in seen]
    if unknown:
        shown = ", ".join(sorted(map(str, seen))[:20]) or "none"
        raise DataContractError(label, f"key event(s) {', '.join(unknown)} never occur (events "
                                f"seen: {shown})", "event")


def contract_mapping(present: dict[str, set[str]]) -> Mapping:
    """The identity mapping of contract-shaped tables (``present``: table -> its columns);
    optional contract columns a table lacks are left out. Its data set has no name of its own
    (models of contract-shaped data are registered under the default name)."""
    tables = {spec.name: TableMap(**{"from": spec.name, "columns": {
        c.name: c.name for c in spec.columns if c.name in present[spec.name]}})
        for spec in TABLES if spec.name in present}
    return Mapping.model_construct(name="", description="", data=None, extract_date=None,
                                   tables=tables, features=FeaturesMap(), churn=ChurnMap())
