"""Snapshot exports: one CRM table with a row per account and a churned flag.

Many teams have no event log, only a table of account attributes exported once, with a column
saying whether the account has churned (the shared ``ibm-telco-churn``, ``orange-telecom-churn``
and ``bank-churn-records`` are such tables). A mapping's ``snapshot:`` section declares one: the
file(s), the id column, the label column and its churned values, the numeric and categorical
attribute columns, and the columns left out, each with the reason. Every column of the file must
be one of these, so a new column in a later export is never used (or ignored) silently.

A snapshot is **not point-in-time**: the attributes were read when the export was taken, after
some accounts had already churned, so an attribute may describe the account after its churn
(a tenure that stopped growing, charges that stopped). Rows have no dates, so the model is
checked by stratified cross-validation over accounts, not by a time split; ``docs/snapshot-
exports.md`` says what that means for its figures.

:func:`apply_snapshot` reads the table through a :class:`~features.mapping.TableReader` and
returns a :class:`Snapshot`: the typed feature frame with its label, and the catalogue of its
features (descriptions, units and signals the API's reasons are told with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.contract import DataContractError
from features.definitions import (
    CATALOGUE,
    DEFAULT_CONFIG,
    FAMILY_TABLE,
    Attribute,
    FeatureSpec,
    spec_records,
)

#: The label column of a snapshot's feature frame (as in the training rows of event-log data).
LABEL = "churned"
#: How a snapshot's model is validated (stored with the model; the promotion gate reads it).
CROSS_VALIDATION = "cross-validation"
_RESERVED = frozenset({s.name for s in CATALOGUE} | {"account_id", "as_of", LABEL})


class Reader(Protocol):
    def read(self, name: str) -> tuple[pd.DataFrame, str]:
        """``(frame, label for messages)`` of source table ``name``."""
        ...


class AttributeMap(BaseModel):
    """How one attribute column reads as a feature (all optional)."""

    model_config = ConfigDict(extra="forbid")
    #: The feature's name [default: the column in snake case, e.g. MonthlyCharges -> monthly_charges].
    name: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    #: Plain-language description, used in the API's reasons [default: the column's name].
    description: str | None = None
    #: Unit shown with the value in reasons ("months", "currency", "calls", "flag" for 0/1 ...).
    unit: str = ""
    #: Attributes of one signal (e.g. minutes and charge of the same calls) make one reason.
    signal: str = ""
    #: Values outside [low, high] cannot be true: the API answers 422 (numeric columns only).
    low: float | None = None
    high: float | None = None


class LabelMap(BaseModel):
    """The churned flag: its column, the values meaning churned and those meaning retained."""

    model_config = ConfigDict(extra="forbid")
    column: str
    churned: list[str] = Field(min_length=1)
    #: The values meaning retained [default: every other non-empty value].
    retained: list[str] = []

    @field_validator("churned", "retained", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        return [str(v) for v in items]


Attributes = dict[str, AttributeMap | str | None]


class SnapshotMap(BaseModel):
    """A mapping's ``snapshot:`` section (see the module docstring and docs/snapshot-exports.md)."""

    model_config = ConfigDict(extra="forbid")
    #: The file (stem or name in the data directory, or a database table); several files with
    #: the same columns are read as one table (an export published in parts).
    source: str | list[str] = Field(alias="from")
    #: The account id column [default: none; accounts are numbered by file and row].
    id: str | None = None
    label: LabelMap
    numeric: Attributes = {}
    categorical: Attributes = {}
    #: Columns left out, each with the reason (an identifier, a leak, no signal ...).
    drop: dict[str, str] = {}
    #: The churn window the flag covers, when the data's documentation says (e.g. 30 for "left
    #: within the last month"); shown as the model's horizon.
    horizon_days: int | None = Field(None, gt=0)
    #: Stratified cross-validation folds.
    folds: int = Field(5, ge=2, le=20)

    @field_validator("numeric", "categorical", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if isinstance(value, list):  # a plain list of columns
            return {str(c): None for c in value}
        return value

    @property
    def files(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)

    def attributes(self) -> list[tuple[str, Literal["float", "category"], AttributeMap]]:
        """``(column, dtype, its settings)`` of every attribute, numeric first."""
        out = []
        for dtype, group in (("float", self.numeric), ("category", self.categorical)):
            for column, spec in group.items():
                settings = (spec if isinstance(spec, AttributeMap)
                            else AttributeMap(description=spec) if isinstance(spec, str)
                            else AttributeMap())
                out.append((column, dtype, settings))
        return out  # type: ignore[return-value]


def snake_case(column: str) -> str:
    """A feature name of a column: ``MonthlyCharges`` -> ``monthly_charges``, ``Total day
    minutes`` -> ``total_day_minutes``, ``customerID`` -> ``customer_id``."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", str(column))
    text = re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")
    return text if text and text[0].isalpha() else f"x_{text}"


@dataclass
class Snapshot:
    """A snapshot export read through its mapping: one row per account.

    ``frame`` holds ``account_id``, the feature columns (float, or string for categories) and
    ``churned`` (0/1). It offers what training reads of a data set (``name``, ``source``,
    ``available``, ``feature_config``, ``get``), with only the account family present.
    """

    frame: pd.DataFrame
    specs: tuple[FeatureSpec, ...]
    name: str
    source: str
    files: list[str]
    label: str
    dropped: dict[str, str] = field(default_factory=dict)
    horizon_days: int | None = None
    folds: int = 5
    warnings: list[str] = field(default_factory=list)
    feature_config = DEFAULT_CONFIG

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def categorical(self) -> list[str]:
        return [s.name for s in self.specs if s.dtype == "category"]

    @property
    def available(self) -> list[str]:
        return ["snapshot"]

    def get(self, table: str) -> pd.DataFrame | None:
        """The account table is the snapshot itself; there are no dated tables."""
        return self.frame if table == "accounts" else None

    def families(self) -> dict[str, bool]:
        return {family: table == "accounts" for family, table in FAMILY_TABLE.items()}

    def catalogue(self) -> list[dict[str, object]]:
        return spec_records(self.specs)

    def lines(self) -> list[str]:
        """What was understood (``churn check``), one line each."""
        y = self.frame[LABEL]
        nums = [s.name for s in self.specs if s.dtype != "category"]
        cats = self.categorical
        out = [f"data: {self.source}; data set {self.name} (a snapshot export: one row per "
               f"account, no dates), its models registered as {self.name}",
               f"  {', '.join(self.files)}: {len(self.frame):,} accounts",
               f"label: {self.label}: {int(y.sum()):,} churned ({y.mean():.1%}), "
               f"{int((1 - y).sum()):,} retained",
               f"features: {len(nums)} numeric ({', '.join(nums) or 'none'}), {len(cats)} "
               f"categorical ({', '.join(cats) or 'none'})"]
        out += [f"left out: {column} ({why})" for column, why in self.dropped.items()]
        out.append(f"validation: stratified {self.folds}-fold cross-validation over accounts; "
                   "not point-in-time (the attributes were read at the export, after the churn "
                   "of the churned accounts)")
        absent = [f for f, ok in self.families().items() if not ok]
        out.append(f"feature families: account (no data for {', '.join(absent)})")
        out += [f"warning: {w}" for w in self.warnings]
        return out


def _read(spec: SnapshotMap, source: Reader) -> tuple[pd.DataFrame, str, list[str]]:
    """The snapshot's rows (files read one after another), a label for messages, the files."""
    frames, labels, columns = [], [], []
    for name in spec.files:
        frame, label = source.read(name)
        columns = columns or list(frame.columns)
        if labels and list(frame.columns) != columns:
            raise DataContractError(label, f"its columns differ from {labels[0]}'s: "
                                    f"{', '.join(map(str, frame.columns))}")
        frames.append(frame.reset_index(drop=True).assign(_file=label, _line=np.arange(len(frame))))
        labels.append(label)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame, " + ".join(labels), labels


def _declared(spec: SnapshotMap, columns: list[str], label: str) -> None:
    """Every column is declared exactly once, and every declared column exists."""
    roles: dict[str, list[str]] = {}
    named = [("id", [spec.id] if spec.id else []), ("label", [spec.label.column]),
             ("numeric", list(spec.numeric)), ("categorical", list(spec.categorical)),
             ("drop", list(spec.drop))]
    for role, cols in named:
        for c in cols:
            roles.setdefault(c, []).append(role)
    twice = {c: r for c, r in roles.items() if len(r) > 1}
    if twice:
        c, r = next(iter(twice.items()))
        raise DataContractError(label, f"the mapping declares it under {' and '.join(r)}; give "
                                "each column one role", c)
    missing = [c for c in roles if c not in columns]
    if missing:
        raise DataContractError(label, f"the mapping's snapshot names column(s) not in the file: "
                                f"{', '.join(missing)}; found {', '.join(columns)}", missing[0])
    undeclared = [c for c in columns if c not in roles]
    if undeclared:
        raise DataContractError(label, f"column(s) {', '.join(undeclared)} not declared: list each "
                                "under the snapshot's numeric, categorical or drop (with the "
                                "reason)", undeclared[0])


def _bad(raw: pd.DataFrame, mask: pd.Series, message: str, column: str) -> DataContractError:
    """An error naming the file of the first bad row, the column and the bad rows of that file."""
    mask = mask.fillna(False).to_numpy(dtype=bool)
    file = str(raw["_file"].to_numpy()[mask][0])
    lines = raw["_line"].to_numpy()[mask & (raw["_file"] == file).to_numpy()]
    offset = 2 if ".csv" in file else 0
    return DataContractError(file, message, column, [int(n) + offset for n in lines[:6]])


def _numbers(raw: pd.DataFrame, column: str, settings: AttributeMap) -> pd.Series:
    text = raw[column].astype("string").str.strip()
    present = text.notna() & (text != "")
    parsed = pd.to_numeric(text.where(present, None), errors="coerce").astype("float64")
    bad = present & parsed.isna()
    if bad.any():
        raise _bad(raw, bad, f"not a number: {text[bad].iloc[0]!r} (declare the column "
                   "categorical, or leave it out under drop)", column)
    bad = pd.Series(np.isinf(parsed), index=parsed.index)
    if bad.any():
        raise _bad(raw, bad, f"not a finite number: {text[bad].iloc[0]!r}", column)
    for limit, word, out in ((settings.low, "below", parsed < (settings.low or 0)),
                             (settings.high, "above", parsed > (settings.high or 0))):
        if limit is not None and out.any():
            raise _bad(raw, out, f"value {parsed[out].iloc[0]:g} {word} the declared {limit:g}",
                       column)
    return parsed


def _label(spec: LabelMap, raw: pd.DataFrame, label: str) -> pd.Series:
    text = raw[spec.column].astype("string").str.strip()
    churned = text.isin(spec.churned)
    retained = text.isin(spec.retained) if spec.retained else text.notna() & (text != "")
    retained &= ~churned
    bad = ~(churned | retained)
    if bad.any():
        shown = text[bad].iloc[0]
        known = spec.churned + spec.retained
        shown = "(empty)" if pd.isna(shown) or not shown else repr(shown)
        raise _bad(raw, bad, f"label value {shown} is neither churned nor retained (expected one "
                   f"of {', '.join(known)})", spec.column)
    if not churned.any() or churned.all():
        raise DataContractError(label, f"every row is {'churned' if churned.all() else 'retained'}"
                                f" (churned = {', '.join(spec.churned)}): nothing to learn",
                                spec.column)
    return churned.astype("int64")


def _specs(spec: SnapshotMap, label: str) -> list[FeatureSpec]:
    specs, names = [], {}
    for column, dtype, settings in spec.attributes():
        name = settings.name or snake_case(column)
        if name in _RESERVED:
            raise DataContractError(label, f"its feature name {name!r} is taken by the built-in "
                                    "catalogue; give it another with name:", column)
        if name in names:
            raise DataContractError(label, f"its feature name {name!r} is also that of column "
                                    f"{names[name]!r}; give one another with name:", column)
        names[name] = column
        unit = settings.unit if dtype == "float" else ""
        specs.append(FeatureSpec(
            name, "account", settings.description or str(column),
            Attribute(f"snapshot:{column}"), aggregation="flag" if unit == "flag" else "attribute",
            dtype=dtype, unit=unit, signal=settings.signal, low=settings.low,
            high=settings.high))
    if not specs:
        raise DataContractError(label, "the snapshot declares no numeric or categorical column")
    return specs


def apply_snapshot(spec: SnapshotMap, source: Reader, *, name: str, data_label: str) -> Snapshot:
    """The :class:`Snapshot` ``spec`` makes of the table(s) ``source`` reads.

    Raises:
        DataContractError: a column is undeclared, missing, or holds a value its declaration
            does not allow; names the file, the column and the rows.
    """
    raw, label, files = _read(spec, source)
    _declared(spec, [c for c in raw.columns if c not in ("_file", "_line")], label)
    specs = _specs(spec, label)
    out: dict[str, pd.Series] = {}
    if spec.id is not None:
        ids = raw[spec.id].astype("string").str.strip()
        empty = ids.isna() | (ids == "")
        if empty.any():
            raise _bad(raw, empty, "empty account id", spec.id)
        dup = ids.duplicated()
        if dup.any():
            raise _bad(raw, dup, f"account id {ids[dup].iloc[0]!r} repeats: a snapshot has one "
                       "row per account", spec.id)
        out["account_id"] = ids
    else:
        out["account_id"] = (raw["_file"].str.replace(r"\.[a-z.]+$", "", regex=True) + ":"
                             + (raw["_line"] + 2).astype(str)).astype("string")  # the CSV line
    for fspec, (column, dtype, settings) in zip(specs, spec.attributes(), strict=True):
        if dtype == "category":
            text = raw[column].astype("string").str.strip()
            out[fspec.name] = text.where(text != "", None)
        else:
            out[fspec.name] = _numbers(raw, column, settings)
    out[LABEL] = _label(spec.label, raw, label)
    frame = pd.DataFrame(out).reset_index(drop=True)
    warnings = [f"{fs.name} ({column}) has no value on any row"
                for fs, (column, _, _) in zip(specs, spec.attributes(), strict=True)
                if frame[fs.name].isna().all()]
    churned = ", ".join(spec.label.churned)
    return Snapshot(frame, tuple(specs), name, data_label, files,
                    f"{spec.label.column} = {churned}", dict(spec.drop), spec.horizon_days,
                    spec.folds, warnings)
