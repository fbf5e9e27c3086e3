"""What the service understood of a data set, before anything is trained on it (``churn check``).

The files read and ignored, rows and date ranges per table, the extract date and where it comes
from, the feature families the data can feed, the churn rate per observation date and every
warning loading raised. ``churn train`` prints the same report first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from features.contract import TABLES, Tables, time_span
from features.labels import LabelSettings
from features.mlflow_defaults import DEFAULT_MODEL_NAME
from features.pointintime import family_availability
from features.rows import churn_rates, grace_days_for, labelled_rows


@dataclass
class TableReport:
    name: str
    file: str
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None


@dataclass
class DataReport:
    """The report of one data set (see the module docstring); ``problems`` stop a training run."""

    source: str
    name: str
    model_name: str
    tables: list[TableReport]
    extract_date: str
    observed_until: pd.Timestamp
    families: dict[str, bool]
    horizon_days: int
    grace_days: int
    churn_rates: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as text, one line each."""
        out = [f"data: {self.source}; data set {self.name}, its models registered as "
               f"{self.model_name}"]
        for t in self.tables:
            span = (f", {t.first:%Y-%m-%d} .. {t.last:%Y-%m-%d}" if t.first is not None
                    and t.last is not None else "")
            out.append(f"  {t.name}: {t.file}, {t.rows:,} rows{span}")
        out.append(f"extract date: {self.extract_date}; churn known until "
                   f"{self.observed_until:%Y-%m-%d}")
        present = [f for f, ok in self.families.items() if ok]
        absent = [f for f, ok in self.families.items() if not ok]
        out.append(f"feature families: {', '.join(present)}"
                   + (f" (no data for {', '.join(absent)})" if absent else ""))
        if self.churn_rates:
            rates = ", ".join(f"{d} {r:.1%}" for d, r in self.churn_rates.items())
            out.append(f"churn within {self.horizon_days} days (grace {self.grace_days}) per "
                       f"observation date: {rates}")
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"problem: {p}" for p in self.problems]
        return out


def _span(tables: Tables, name: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    spec = next(s for s in TABLES if s.name == name)
    column = spec.time_column or ("signup_date" if name == "accounts" else None)
    frame = tables.get(name)
    if column is None or frame is None or column not in frame:
        return None, None
    first, last = time_span(frame, column)
    return (None, None) if pd.isna(first) else (first, last)


def check(tables: Tables, label: LabelSettings | None = None) -> DataReport:
    """The report of ``tables``; ``label`` defaults to the data set's churn definition."""
    label = label or LabelSettings(
        horizon_days=tables.churn.horizon_days or LabelSettings().horizon_days,
        grace_days=grace_days_for(tables))
    report = DataReport(
        source=tables.source, name=tables.name or "in the contract's own shape",
        model_name=tables.name or DEFAULT_MODEL_NAME,
        tables=[TableReport(name, tables.files.get(name, name), len(tables.get(name)),
                            *_span(tables, name)) for name in tables.available],
        extract_date=str(tables.extract_date()), observed_until=tables.observed_until(),
        families=family_availability(tables), horizon_days=label.horizon_days,
        grace_days=label.grace_days, warnings=list(tables.warnings))
    try:
        rates = churn_rates(labelled_rows(tables, label))
        report.churn_rates = {f"{d:%Y-%m-%d}": float(r) for d, r in rates.items()}
    except ValueError as exc:  # no date fits, or the churn-rate spike
        report.problems.append(str(exc))
    return report
