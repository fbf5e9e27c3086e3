"""The point-in-time feature builder: one engine (Ibis, DuckDB by default) for every feature.

For each (account_id, as_of) pair it computes the catalogue in :mod:`features.definitions` from rows
dated strictly before ``as_of``. The same function builds training rows (past dates) and scoring
rows (today); :mod:`features.rows` decides which pairs those are.

How windows are computed (and why): every source table is rolled up to one row per account and
day; a window total is the difference of two running (cumulative) sums per measure, read at the
window's edges (see ``_windowed``). With the usual few snapshot dates, the days between
consecutive edges are first summed into one bucket row per account (the edge grid); otherwise one
zero-valued "probe" row per (account, edge) is sorted before the real rows of its day. Because
as_of is a date (midnight), "days before the edge" is exactly "rows before as_of". This avoids a
range join of every event with every snapshot (slower than pandas), one range-framed window per
feature (one sort each), and ASOF joins (which Ibis cannot compile to Spark): only plain window
functions, group-bys and joins.

The same expressions run on DuckDB (in process, the default) or on Apache Spark through Ibis's
PySpark backend (``build_features(..., spark=session)``, :mod:`features.spark`); only how input
frames become tables and how an intermediate result is kept differ (:class:`_Engine`).
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from features.contract import Tables, on_driver
from features.definitions import (
    FAMILY_TABLE,
    Attribute,
    Derived,
    Distinct,
    FeatureConfig,
    FeatureSpec,
    Median,
    Rule,
    Since,
    Window,
    catalogue,
    helper_specs,
    key_event_measure,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

KEYS = ["account_id", "as_of"]
#: DuckDB's working-memory limit while building features (see build_features).
DEFAULT_MEMORY_LIMIT = "1GB"


def _memory_limit() -> str:
    value = os.environ.get("CHURN_FEATURES_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT).strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value, flags=re.IGNORECASE):
        raise ValueError(f"CHURN_FEATURES_MEMORY_LIMIT must look like 1GB or 512MB, not {value!r}")
    return value


class _Engine:
    """Where the expressions run: an Ibis connection, and the two things backends do differently.

    DuckDB copies an input frame into a table and materialises an intermediate result as a
    table; Spark registers a frame as a temporary view and caches an intermediate result
    (Ibis's PySpark backend has no temporary tables, and a permanent one would be written to the
    session's warehouse).
    """

    def __init__(self, spark: SparkSession | None = None) -> None:
        self.spark = spark is not None
        self.cached: list[ir.Table] = []
        self.lookups = 0
        self.prefix = f"churn_{uuid.uuid4().hex[:12]}_"
        if spark is not None:
            from features.spark import connect

            self.con = connect(spark)
            return
        self.con = ibis.duckdb.connect()
        # DuckDB's own progress bar would garble logs and CLI output; the CLI reports progress.
        self.con.raw_sql("SET enable_progress_bar = false")
        # Every result is ordered explicitly (by day within windows, by the observation row at
        # the end), so DuckDB may reorder rows in between: faster and less memory.
        self.con.raw_sql("SET preserve_insertion_order = false")
        # Bounded working memory: DuckDB spills big sorts and aggregations to disk beyond it (the
        # input frames are not counted). CHURN_FEATURES_MEMORY_LIMIT overrides it ("4GB" ...).
        self.con.raw_sql(f"SET memory_limit = '{_memory_limit()}'")
        self.con.raw_sql(f"SET temp_directory = '{tempfile.gettempdir()}/churn-features-spill'")

    def table(self, name: str, frame: pd.DataFrame) -> ir.Table:
        """An input frame as a table of the engine."""
        if self.spark:
            return self.con.create_view(self.prefix + name, ibis.memtable(frame), overwrite=True)
        return self.con.create_table(name, frame)

    def scan(self, frame: pd.DataFrame | Any, columns: list[str]) -> ir.Table:
        """The usage events' ``columns``, read where they are: DuckDB scans a pandas frame
        without a copy; Spark reads events it holds itself (:mod:`features.spark_events`) as a
        view, or is handed a pandas frame."""
        if on_driver(frame):
            frame = frame[columns]
            return self.table("usage_events", frame) if self.spark else ibis.memtable(frame)
        if not self.spark:
            raise ValueError("these usage events are held by Spark: build the features with "
                             "spark=<the session> (--engine spark)")
        frame.frame.select(*columns).createOrReplaceTempView(self.prefix + "usage_events")
        return self.con.table(self.prefix + "usage_events")

    def keep(self, name: str, expr: ir.Table) -> ir.Table:
        """An intermediate result computed once and read several times."""
        return self.stage(expr) if self.spark else self.con.create_table(name, expr)

    def stage(self, expr: ir.Table) -> ir.Table:
        """A step of the plan: cached on Spark, whose planner slows down sharply on one deep
        plan that reads the same inputs many times; left to DuckDB's optimiser otherwise."""
        if self.spark:
            self.cached.append(expr.cache())
            return self.cached[-1]
        return expr

    def lookup(self, frame: pd.DataFrame, in_place: bool = False) -> ir.Table:
        """A small frame of the plan (edge and bucket lookups), as a table of its own, or with
        ``in_place`` on DuckDB scanned where it is (cheaper to set up, for small builds)."""
        if in_place and not self.spark:
            return ibis.memtable(frame)
        self.lookups += 1
        return self.table(f"lookup_{self.lookups}", frame)

    def collect(self, expr: ir.Table) -> pd.DataFrame:
        if self.spark:
            return self.con.to_pyarrow(expr).to_pandas()
        return expr.to_pyarrow().to_pandas()

    def close(self) -> None:
        """Release what this build left in a Spark session (its views and cached results)."""
        if not self.spark:
            return
        for table in self.cached:
            table.release()
        for name in self.con.list_tables(like=self.prefix):
            self.con.raw_sql(f"DROP VIEW IF EXISTS {name}")


SECONDS_PER_DAY = 86_400


def _day(ts: ir.TimestampValue) -> ir.IntegerValue:
    """Whole days since the Unix epoch: the ordering key of every window."""
    return (ts.epoch_seconds() // SECONDS_PER_DAY).cast("int64")


def _null() -> ir.Value:
    return ibis.null("float64")


def _ratio(a: ir.NumericValue, b: ir.NumericValue) -> ir.Value:
    return ibis.cases((b > 0, a.cast("float64") / b), else_=_null())


#: Least-squares slope over the 90 days before as_of, x = day - as_of (-90 .. -1):
#: n = 90, sum x = -4095, sum x^2 = 247065, so the denominator n sum x^2 - (sum x)^2 = 5466825.
_N, _SX, _SXX = 90, -4095.0, 247065.0


def _slope_90d(total: ir.NumericValue, x_day: ir.NumericValue, day: ir.IntegerValue) -> ir.Value:
    """Fitted change over the 90 days as a share of the mean: slope * 90 / (total / 90)."""
    sxy = x_day - day.cast("float64") * total
    slope = (_N * sxy - _SX * total) / (_N * _SXX - _SX * _SX)
    return ibis.cases((total > 0, slope * (_N * _N) / total), else_=_null())


def _daily_cv_30d(total: ir.NumericValue, squares: ir.NumericValue) -> ir.Value:
    """Coefficient of variation of the 30 daily totals (population standard deviation / mean)."""
    mean = total / 30.0
    var = (squares / 30.0 - mean * mean).clip(lower=0)
    return ibis.cases((total > 0, var.sqrt() / mean), else_=_null())


FORMULAS: dict[str, Callable[..., ir.Value]] = {
    "slope_90d": _slope_90d,
    "daily_cv_30d": _daily_cv_30d,
    "ratio": _ratio,
    "share_of_catalogue": _ratio,
    "pct_change": lambda a, b: ibis.cases((b > 0, (a - b).cast("float64") / b), else_=_null()),
    "difference": lambda a, b: (a - b).cast("float64"),
}


#: Inputs of derived features that are settings of the data set, not columns.
CONSTANTS = ("_key_event_count", "_check_in_days", "_review_days")


def _constant(name: str, config: FeatureConfig) -> ir.Value:
    value = {"_key_event_count": len(config.key_events), "_check_in_days": config.check_in_days,
             "_review_days": config.review_days}[name]
    return ibis.literal(float(value), "float64")


def observation_frame(observations: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise a frame of (account_id, as_of) pairs."""
    missing = [c for c in KEYS if c not in observations.columns]
    if missing:
        raise ValueError(f"observations need columns {KEYS}; missing {missing}")
    obs = observations[KEYS].copy()
    obs["account_id"] = obs["account_id"].astype("string")
    obs["as_of"] = pd.to_datetime(obs["as_of"]).astype("datetime64[us]")
    if (obs["as_of"] != obs["as_of"].dt.normalize()).any():
        raise ValueError("as_of must be a date (midnight); features use rows strictly before it")
    dup = obs.duplicated(KEYS)
    if dup.any():
        first = obs[dup].iloc[0]
        raise ValueError(f"duplicate observation ({first['account_id']}, {first['as_of']:%Y-%m-%d})")
    return obs.reset_index(drop=True)


def _rollups(con: _Engine, tables: Tables, needed: set[str]) -> dict[str, ir.Table]:
    """Daily measures per account for every present event table (usage only when ``needed``)."""
    out: dict[str, ir.Table] = {}
    config = tables.feature_config
    if tables.usage_events is not None and any(n.startswith("usage_events") for n in needed):
        # Registered, not copied: the events are scanned once per roll-up below.
        ev = con.scan(tables.usage_events,
                      ["account_id", "timestamp", "event", "user_id", "quantity"])
        ev = ev.mutate(day=_day(ev.timestamp), qty=ev.quantity.fill_null(1))
        key_measures = {key_event_measure(e): ev.qty.sum(where=ev.event == e).fill_null(0)
                        .cast("float64") for e in config.key_events}
        daily = ev.group_by(["account_id", "day"]).agg(
            events=ev.qty.sum().cast("float64"),
            active=ev.count().clip(upper=1), **key_measures)
        if "usage_events" in needed:
            out["usage_events"] = daily.mutate(
                events_sq=daily.events * daily.events,
                events_x_day=daily.events * daily.day.cast("float64"))
        if "usage_events:event" in needed:
            out["usage_events:event"] = ev.select("account_id", "day", key=ev.event)
        if "usage_events:user_id" in needed:
            out["usage_events:user_id"] = (ev.filter(ev.user_id.notnull())
                                           .select("account_id", "day", key=ev.user_id))
    if tables.touchpoints is not None:
        tp = con.table("touchpoints", tables.touchpoints[
            ["account_id", "timestamp", "channel", "initiated_by", "resolved_at", "escalated"]])
        company = tp.initiated_by == "company"
        customer = tp.initiated_by == "customer"
        zero = ibis.literal(0, "int64")
        reviews = [c.lower() for c in config.review_channels]
        opened = tp.select(
            "account_id", day=_day(tp.timestamp), proactive=company.cast("int64"),
            reactive=customer.cast("int64"), resolved=zero,
            review=(company & tp.channel.lower().isin(reviews)).cast("int64"),
            escalated=(customer & (tp.escalated == 1)).fill_null(False).cast("int64"))
        # A resolution is its own dated event: a ticket resolved on or after as_of is open then.
        done = tp.filter(customer & tp.resolved_at.notnull())
        resolved = done.select("account_id", day=_day(done.resolved_at), proactive=zero,
                               reactive=zero, resolved=ibis.literal(1, "int64"), review=zero,
                               escalated=zero)
        both = opened.union(resolved)
        out["touchpoints"] = both.group_by(["account_id", "day"]).agg(
            proactive=both.proactive.sum(), reactive=both.reactive.sum(),
            resolved=both.resolved.sum(), review=both.review.sum(),
            escalated=both.escalated.sum())
        # One row per resolved request, dated by its resolution (for the median resolution time).
        out["touchpoints:resolution_hours"] = done.select(
            "account_id", day=_day(done.resolved_at),
            value=(done.resolved_at.epoch_seconds() - done.timestamp.epoch_seconds())
            .cast("float64") / 3600.0)
    if tables.surveys is not None:
        sv = con.table("surveys", tables.surveys[["account_id", "timestamp", "kind", "score"]])
        sv = sv.mutate(day=_day(sv.timestamp))
        answered = sv.score.notnull()
        out["surveys"] = sv.group_by(["account_id", "day"]).agg(
            sent=sv.count(),
            answered=answered.cast("int64").sum(),
            csat_answered=((sv.kind == "csat") & answered).cast("int64").sum(),
            csat_satisfied=((sv.kind == "csat") & (sv.score >= 4)).cast("int64").sum(),
            nps_answered=((sv.kind == "nps") & answered).cast("int64").sum(),
            nps_sent=(sv.kind == "nps").cast("int64").sum(),
            # Several NPS answers on one day: their mean is that day's answer.
            nps_score=sv.score.mean(where=(sv.kind == "nps") & answered))
    return out


def _offsets(specs: list[FeatureSpec]) -> list[int]:
    """The window edges of ``specs`` as days before as_of (0 is as_of itself)."""
    offsets = {0}
    for spec in specs:
        c = spec.compute
        if isinstance(c, Window):
            offsets.add(c.offset)
            if c.days:
                offsets.add(c.offset + c.days)
    return sorted(offsets)


def _windowed(con: _Engine, rollup: ir.Table, snaps: ir.Table, specs: list[FeatureSpec],
              observed: pd.DataFrame) -> ir.Table:
    """Window and recency features of one source, one row per snapshot.

    A window total is the difference of two running (cumulative) sums: for a snapshot on day D
    and a window of N days ending ``offset`` days before D, it is C(D - offset) - C(D - offset -
    N), where C(X) is the total of the rows dated before day X (an "edge"). A running aggregate is
    one streaming pass over sorted rows, much cheaper than one range-framed window per feature.
    C is read on an edge grid when that is small (:func:`_edge_grid`), else at probe rows.
    """
    measures = sorted({spec.compute.measure for spec in specs})  # type: ignore[union-attr]
    since = sorted({spec.compute.measure for spec in specs if isinstance(spec.compute, Since)})
    offsets = _offsets(specs)
    grid = _edge_grid(observed, offsets)
    if grid is None:
        at, codes = _read_at_probes(rollup, snaps, offsets, measures, since)
    else:
        at, codes = _read_on_grid(con, rollup, grid, measures, since)

    def value(column: str, offset: int) -> ir.Value:
        return at[column].max(where=at.off == offset)

    cols: dict[str, ir.Value] = {}
    for spec in specs:
        c = spec.compute
        if isinstance(c, Window):
            total = value(f"c_{c.measure}", c.offset).fill_null(0)
            if c.days:
                total = total - value(f"c_{c.measure}", c.offset + c.days).fill_null(0)
            cols[spec.name] = total.cast("float64")
        elif isinstance(c, Since):
            cols[spec.name] = value(f"l_{c.measure}", 0)  # the day; made an age below
    out = at.group_by("acc", "snap").agg(**cols)
    ages = {spec.name: (out.snap - out[spec.name]).cast("float64") for spec in specs
            if isinstance(spec.compute, Since)}
    out = out.select("acc", day=out.snap, **{n: ages.get(n, out[n]) for n in cols})
    return out.join(codes, "acc").select("account_id", "day", *cols)


def _last_use(value: ir.Value, day: ir.IntegerValue) -> ir.Value:
    """The day of a row with a positive ``value`` (null otherwise): its max is the last use."""
    return ibis.cases((value > 0, day), else_=ibis.null("int64"))


def _read_at_probes(rollup: ir.Table, snaps: ir.Table, offsets: list[int], measures: list[str],
                    since: list[str]) -> tuple[ir.Table, ir.Table]:
    """C and the last use at each (snapshot, edge), read at zero-valued probe rows added per
    (account, edge) and sorted before the real rows of their day, so C(X) never includes day X.

    Returns (acc, snap, off, c_<measure>..., l_<measure>...) and the account codes.
    """
    # Rows of observed accounts only, keyed by an integer code (sorting on it is much cheaper
    # than on the account_id strings).
    codes = snaps.select("account_id", "acc").distinct()
    keyed = rollup.join(codes, "account_id")
    rows = keyed.select("acc", "day", *measures, real=ibis.literal(1, "int8"),
                        snap=ibis.null("int64"), off=ibis.null("int64"))
    zeros = {m: ibis.literal(0).cast(rollup[m].type()) for m in measures}
    probes = [snaps.select("acc", day=snaps.day - o, **zeros, real=ibis.literal(0, "int8"),
                           snap=snaps.day, off=ibis.literal(o, "int64")) for o in offsets]
    union = rows.union(*probes)
    w = ibis.window(group_by="acc", order_by=["day", "real"], rows=(None, 0))
    running = {f"c_{m}": union[m].sum().over(w) for m in measures}
    running |= {f"l_{m}": _last_use(union[m], union.day).max().over(w) for m in since}
    at = union.mutate(**running)
    return at.filter(at.real == 0).select("acc", "snap", "off", *running), codes


@dataclass(frozen=True)
class _Grid:
    """Where C is read when every snapshot's edges are known up front.

    The edges of all snapshot dates, sorted, are positions 0..n-1; a row dated ``day`` belongs to
    the bucket of the edges at or before it (``bisect_right``), so C at position k is the running
    sum of buckets 0..k. Each account gets one row per position from its first edge to its last.
    """

    spans: pd.DataFrame  # account_id, acc, lo, hi: the positions each account reads
    buckets: pd.DataFrame  # day, bucket: every day from the first edge to the last
    positions: pd.DataFrame  # pos: 0 .. number of edges - 1
    reads: pd.DataFrame  # snap, off, pos: the position of each (snapshot day, offset) edge
    last: int  # the last edge: rows on or after it are never read


#: The edge grid is used while it has at most this many rows per probe row it replaces (it also
#: replaces the daily rows, which it sums into buckets).
GRID_ROWS_PER_PROBE = 2


def _edge_grid(observed: pd.DataFrame, offsets: list[int]) -> _Grid | None:
    """The edge grid of the (acc, day) snapshots in ``observed``, or None where probes are
    cheaper: many distinct dates, each account observed at few of them."""
    if observed.empty:
        return None
    offs = np.asarray(offsets, dtype=np.int64)
    dates = np.unique(observed["day"].to_numpy(dtype=np.int64))
    edges = np.unique((dates[:, None] - offs[None, :]).ravel())
    per = observed.groupby("acc", sort=False).agg(
        account_id=("account_id", "first"), first=("day", "min"), last=("day", "max"))
    lo = np.searchsorted(edges, per["first"].to_numpy() - offs[-1])
    hi = np.searchsorted(edges, per["last"].to_numpy() - offs[0])
    if int((hi - lo + 1).sum()) > GRID_ROWS_PER_PROBE * len(observed) * len(offs):
        return None
    days = np.arange(edges[0], edges[-1], dtype=np.int64)
    return _Grid(
        spans=pd.DataFrame({"account_id": per["account_id"].to_numpy(), "acc": per.index.to_numpy(),
                            "lo": lo, "hi": hi}),
        buckets=pd.DataFrame({"day": days, "bucket": np.searchsorted(edges, days, side="right")}),
        positions=pd.DataFrame({"pos": np.arange(len(edges), dtype=np.int64)}),
        reads=pd.DataFrame([(d, o, np.searchsorted(edges, d - o)) for d in dates for o in offs],
                           columns=["snap", "off", "pos"]).astype("int64"),
        last=int(edges[-1]))


#: Up to this many accounts, the edge grid's lookups are scanned in place (see _read_on_grid).
IN_PLACE_ACCOUNTS = 5_000


def _read_on_grid(con: _Engine, rollup: ir.Table, grid: _Grid, measures: list[str],
                  since: list[str]) -> tuple[ir.Table, ir.Table]:
    """C and the last use at each (snapshot, edge), read on the edge grid: rows are summed per
    (account, bucket) (buckets before an account's first position join that position, later
    ones are never read), spread over the account's positions, and summed running.

    Returns (acc, snap, off, c_<measure>..., l_<measure>...) and the account codes.
    """
    # Copying the lookups into tables costs a small build more than it saves; a large build's
    # tables kept DuckDB's peak memory lower (docs/benchmarks.md).
    in_place = len(grid.spans) <= IN_PLACE_ACCOUNTS
    spans = con.lookup(grid.spans, in_place)
    rows = rollup.filter(rollup.day < grid.last).join(spans, "account_id")
    rows = rows.left_join(con.lookup(grid.buckets, in_place), "day")
    rows = rows.mutate(pos=ibis.greatest(rows.bucket.fill_null(0), rows.lo))
    rows = rows.filter(rows.pos <= rows.hi)
    summed = rows.group_by(["acc", "pos"]).agg(
        **{m: rows[m].sum() for m in measures},
        **{f"l_{m}": _last_use(rows[m], rows.day).max() for m in since})
    positions = con.lookup(grid.positions, in_place)
    cells = spans.join(positions, [positions.pos >= spans.lo, positions.pos <= spans.hi]
                       ).select("acc", "pos")
    dense = cells.left_join(summed, ["acc", "pos"]).select(
        "acc", "pos", **{m: summed[m].fill_null(0) for m in measures},
        **{f"l_{m}": summed[f"l_{m}"] for m in since})
    w = ibis.window(group_by="acc", order_by="pos", rows=(None, 0))
    running = {f"c_{m}": dense[m].sum().over(w) for m in measures}
    running |= {f"l_{m}": dense[f"l_{m}"].max().over(w) for m in since}
    at = dense.select("acc", "pos", **running).join(con.lookup(grid.reads, in_place), "pos")
    return at.select("acc", "snap", "off", *running), spans.select("account_id", "acc")


def _median(rows: ir.Table, snaps: ir.Table, spec: FeatureSpec) -> ir.Table:
    """Median of a per-row value over the rows dated in the window before each snapshot."""
    c: Median = spec.compute  # type: ignore[assignment]
    union = rows.select("account_id", "day", "value", is_snap=ibis.literal(False)).union(
        snaps.select("account_id", "day", value=_null(), is_snap=ibis.literal(True)))
    w = ibis.window(group_by="account_id", order_by="day", range=(-c.days, -1))
    marked = union.mutate(**{spec.name: union.value.median().over(w).cast("float64")})
    return marked.filter(marked.is_snap).select("account_id", "day", spec.name)


#: Up to this many distinct snapshot dates, distinct counts use one conditional aggregate per date.
MAX_DATES_FOR_CONDITIONAL = 24


def _distinct(rows: ir.Table, snaps: ir.Table, specs: list[FeatureSpec], dates: list[int],
              con: _Engine) -> ir.Table:
    """Distinct keys (events, users) per snapshot: a key counts if its last use before as_of is
    inside the window.

    With few snapshot dates (the usual case: the same dates for every account), one pass over the
    rows finds each (account, key)'s last use before every date with a conditional ``max`` per
    date; otherwise a window over the (account, key, day) pairs finds it per snapshot.
    """
    if len(dates) > MAX_DATES_FOR_CONDITIONAL:
        return _distinct_windowed(rows.distinct(), snaps, specs)
    last = rows.group_by(["account_id", "key"]).agg(
        **{f"l{i}": rows.day.max(where=rows.day < d) for i, d in enumerate(dates)})
    last = con.keep(f"last_use_{specs[0].name}", last)  # read once per date below
    per_date = []
    for i, d in enumerate(dates):
        l_i = last[f"l{i}"]
        per_date.append(last.group_by("account_id").agg(
            day=ibis.literal(d, "int64"),
            **{spec.name: (l_i >= d - spec.compute.days).cast("int64").sum().cast("float64")  # type: ignore[union-attr]
               for spec in specs}))
    counted = per_date[0].union(*per_date[1:]) if len(per_date) > 1 else per_date[0]
    return snaps.select("account_id", "day").left_join(counted, ["account_id", "day"]).select(
        "account_id", "day", **{s.name: counted[s.name].fill_null(0) for s in specs})


def _distinct_windowed(pairs: ir.Table, snaps: ir.Table, specs: list[FeatureSpec]) -> ir.Table:
    """Distinct keys per snapshot with a window over (account, key, day) pairs (any dates)."""
    keys = pairs.select("account_id", "key").distinct()
    snap_keys = snaps.join(keys, "account_id").select("account_id", "key", "day",
                                                      is_snap=ibis.literal(True))
    union = pairs.mutate(is_snap=ibis.literal(False)).union(snap_keys)
    w = ibis.window(group_by=["account_id", "key"], order_by="day", range=(None, -1))
    last = ibis.cases((~union.is_snap, union.day), else_=ibis.null("int64")).max().over(w)
    marked = union.mutate(last=last).filter(union.is_snap)
    aggs = {spec.name: (marked["last"] >= marked.day - spec.compute.days).cast("float64").sum()  # type: ignore[union-attr]
            for spec in specs}
    counted = marked.group_by(["account_id", "day"]).agg(**aggs)
    return snaps.select("account_id", "day").left_join(counted, ["account_id", "day"]).select(
        "account_id", "day", **{s.name: counted[s.name].fill_null(0) for s in specs})


def _catalogue_size(usage: ir.Table, snaps: ir.Table) -> ir.Table:
    """Product features seen (by any account) before each snapshot date."""
    first_seen = usage.group_by("key").agg(first=usage.day.min())
    snap_days = snaps.select("day").distinct()
    crossed = snap_days.cross_join(first_seen)
    seen = crossed.filter(crossed["first"] < crossed.day)
    return seen.group_by("day").agg(_catalogue_size=seen.count().cast("float64"))


def _extra_attributes(con: _Engine, tables: Tables, snaps: ir.Table,
                      specs: list[FeatureSpec]) -> ir.Table | None:
    """Configured extra account columns (``extra:<column>:<kind>`` attributes)."""
    wanted = [(s.name, *s.compute.name.split(":")[1:]) for s in specs  # type: ignore[union-attr]
              if isinstance(s.compute, Attribute) and s.compute.name.startswith("extra:")]
    if not wanted:
        return None
    acc = tables.accounts
    missing = [col for _, col, _ in wanted if col not in acc.columns]
    if missing:
        raise ValueError(f"{tables.files.get('accounts', 'accounts')}: configured account "
                         f"attribute column(s) missing: {', '.join(missing)}")
    frame = pd.DataFrame({"account_id": acc["account_id"]})
    for i, (_, col, kind) in enumerate(wanted):
        values = acc[col]
        if kind == "category":
            frame[f"c{i}"] = values.astype("string")
        elif kind == "number":
            frame[f"c{i}"] = pd.to_numeric(values, errors="raise").astype("float64")
        else:
            frame[f"c{i}"] = pd.to_datetime(values).astype("datetime64[us]")
    extra = con.table("account_extras", frame)
    j = snaps.select("account_id", "day", "as_of").left_join(extra, "account_id")
    cols: dict[str, ir.Value] = {}
    for i, (name, _, kind) in enumerate(wanted):
        c = j[f"c{i}"]
        if kind == "years_since":
            cols[name] = ibis.cases((c < j.as_of, (j.day - _day(c)).cast("float64") / 365.25),
                                    else_=_null())
        else:
            cols[name] = c
    return j.select("account_id", "day", **cols)


def _account_attributes(con: _Engine, tables: Tables, snaps: ir.Table) -> ir.Table:
    acc = tables.accounts
    acc_cols = ["account_id"] + [c for c in ("plan", "seats", "industry", "segment",
                                             "signup_date") if c in acc]
    accounts = con.table("accounts", acc[acc_cols])
    subs = con.table("subscriptions", tables.subscriptions[
        ["account_id", "start_date", "mrr", "billing_period_months"]])
    subs = subs.mutate(start_day=_day(subs.start_date))
    joined = snaps.join(subs, [snaps.account_id == subs.account_id, subs.start_day < snaps.day])
    # The current subscription is the latest one started before as_of (never one starting later).
    latest = joined.start_day
    state = joined.group_by([snaps.account_id, snaps.day]).agg(
        mrr=joined.mrr.argmax(latest), first_start=joined.start_day.min(),
        current_start=joined.start_date.argmax(latest),
        period=joined.billing_period_months.argmax(latest).cast("int64"))
    # The subscription current 90 days earlier, for the mrr change (upgrade / downgrade).
    back = snaps.join(subs, [snaps.account_id == subs.account_id,
                             subs.start_day < snaps.day - 90])
    earlier = back.group_by([snaps.account_id, snaps.day]).agg(
        mrr_then=back.mrr.argmax(back.start_day))
    out = snaps.select("account_id", "day", "as_of").left_join(state, ["account_id", "day"]).select(
        "account_id", "day", "as_of", "mrr", "first_start", "current_start", "period")
    out = out.left_join(earlier, ["account_id", "day"]).select(*out.columns, earlier.mrr_then)
    out = out.left_join(accounts, "account_id").select(
        "account_id", "day", "as_of", "mrr", "mrr_then", "first_start", "current_start", "period",
        "plan", "seats", "industry", "segment", signup=_day(accounts.signup_date))
    start = ibis.cases((out.signup.notnull() & (out.signup < out.day), out.signup),
                       else_=out.first_start)
    return out.select("account_id", "day", "mrr", "plan", "seats", "industry", "segment",
                      tenure_days=(out.day - start).cast("float64"),
                      mrr_change_90d=_ratio(out.mrr - out.mrr_then, out.mrr_then),
                      days_to_renewal=_days_to_renewal(out.current_start, out.period, out.as_of))


def _days_to_renewal(start: ir.TimestampValue, period: ir.IntegerValue, as_of: ir.TimestampValue
                     ) -> ir.FloatingValue:
    """Days from as_of to the next anniversary of ``start`` every ``period`` months (0 = today)."""
    months = (as_of.year() - start.year()) * 12 + (as_of.month() - start.month())
    k = ((months + period - 1) // period) * period  # whole periods, rounded up
    candidate = start.date() + k.as_interval("M")
    nxt = ibis.cases((candidate < as_of.date(), candidate + period.as_interval("M")),
                     else_=candidate)
    return nxt.delta(as_of.date(), unit="day").cast("float64")


def _last_nps(con: _Engine, rollup: ir.Table, snaps: ir.Table, observed: pd.DataFrame
              ) -> ir.Table:
    """Latest NPS answer before as_of: find its day with a window, then join that day's answer."""
    nps_days = rollup.filter(rollup.nps_answered > 0).select("account_id", "day", "nps_answered")
    spec = FeatureSpec("_last_nps_age", "surveys", "", Since("surveys", "nps_answered"))
    age = _windowed(con, nps_days, snaps, [spec], observed)
    age = age.mutate(nps_day=age.day - age["_last_nps_age"].cast("int64"))
    answered = rollup.filter(rollup.nps_answered > 0)
    w = ibis.window(group_by="account_id", order_by="day")
    answers = answered.select("account_id", nps_day=answered.day, last_nps=answered.nps_score,
                              previous=answered.nps_score.lag().over(w))
    return age.left_join(answers, ["account_id", "nps_day"]).select(
        "account_id", "day", last_nps=answers.last_nps, _previous_nps=answers.previous)


def build_features(tables: Tables, observations: pd.DataFrame,
                   specs: Iterable[FeatureSpec] | None = None, *,
                   spark: SparkSession | None = None) -> pd.DataFrame:
    """Compute the feature catalogue for each (account_id, as_of) in ``observations``.

    Only rows dated strictly before ``as_of`` are used. Families whose table is absent are null.
    ``specs`` defaults to the catalogue for the data set, ``catalogue(tables.feature_config)``
    (the declared features plus the data set's key-event and attribute features). With ``spark``
    (a SparkSession) the same expressions run on Spark instead of DuckDB, with equal results.

    Returns:
        A frame with ``account_id``, ``as_of`` and one column per feature, in the order of
        ``observations``.
    """
    config: FeatureConfig = tables.feature_config
    specs = list(catalogue(config) if specs is None else specs)
    obs = observation_frame(observations)
    con = _Engine(spark)
    try:
        frame = _collect_features(con, tables, obs, specs)
    finally:
        con.close()
    rules = [s for s in _with_inputs(specs, config) if isinstance(s.compute, Rule)]
    _apply_rules(frame, rules, config)
    out = _finish(frame, specs, _unavailable(tables, specs))
    out.attrs["families"] = family_availability(tables)
    return out


def _collect_features(con: _Engine, tables: Tables, obs: pd.DataFrame,
                      specs: list[FeatureSpec]) -> pd.DataFrame:
    """Every engine-computed feature (and rule input) of ``obs``' rows, in their order."""
    config: FeatureConfig = tables.feature_config
    snap_pd = obs.assign(day=(obs["as_of"] - pd.Timestamp("1970-01-01")).dt.days.astype("int64"),
                         row=range(len(obs)), acc=pd.factorize(obs["account_id"])[0])
    snaps = con.table("snapshots", snap_pd)
    dates = sorted(int(d) for d in snap_pd["day"].unique())
    everything = {s.name: s for s in _with_inputs(specs, config)}
    wanted = {i for s in everything.values() if isinstance(s.compute, Derived)
              for i in s.compute.inputs}
    # The roll-ups the requested features read (each is only computed when needed).
    needed: set[str] = set()
    for spec in everything.values():
        c = spec.compute
        if isinstance(c, Window | Since):
            needed.add(c.source)
        elif isinstance(c, Distinct):
            needed.add(f"{c.source}:{c.key}")
        elif isinstance(c, Median):
            needed.add(f"{c.source}:{c.value}")
    if "_catalogue_size" in wanted:
        needed.add("usage_events:event")
    nps = bool(wanted & {"last_nps", "_previous_nps"}) or "last_nps" in everything
    rollups = {name: con.stage(t) for name, t in _rollups(con, tables, needed).items()}
    parts: list[ir.Table] = [_account_attributes(con, tables, snaps)]
    extras = _extra_attributes(con, tables, snaps, list(everything.values()))
    if extras is not None:
        parts.append(extras)

    by_source: dict[str, list[FeatureSpec]] = {}
    for spec in everything.values():
        if isinstance(spec.compute, Window | Since):
            by_source.setdefault(spec.compute.source, []).append(spec)
    for source, group in by_source.items():
        if source in rollups:
            parts.append(_windowed(con, rollups[source], snaps, group, snap_pd))
    distinct = [s for s in everything.values() if isinstance(s.compute, Distinct)]
    for key in sorted({s.compute.key for s in distinct}):  # type: ignore[union-attr]
        name = f"usage_events:{key}"
        if name in rollups:
            parts.append(_distinct(rollups[name], snaps,
                                   [s for s in distinct if s.compute.key == key],  # type: ignore[union-attr]
                                   dates, con))
    if "usage_events:event" in rollups and "_catalogue_size" in wanted:
        parts.append(snaps.select("account_id", "day").left_join(
            _catalogue_size(rollups["usage_events:event"], snaps), "day").select(
            "account_id", "day", "_catalogue_size"))
    if "surveys" in rollups and nps:
        parts.append(_last_nps(con, rollups["surveys"], snaps, snap_pd))
    for spec in everything.values():
        if isinstance(spec.compute, Median):
            name = f"{spec.compute.source}:{spec.compute.value}"
            if name in rollups:
                parts.append(_median(rollups[name], snaps, spec))

    joined = snaps.select("account_id", "as_of", "day", "row")
    for part in map(con.stage, parts):
        cols = [c for c in part.columns if c not in ("account_id", "day")]
        joined = joined.left_join(part, ["account_id", "day"]).select(
            *[c for c in joined.columns], *cols)
    derived: dict[str, ir.Value] = {}
    key_helpers = [f"_key_{i}_30d" for i in range(len(config.key_events))]
    usage = tables.usage_events is not None
    for spec in everything.values():  # inputs come before the features that use them
        if isinstance(spec.compute, Derived):
            if spec.compute.formula == "count_positive":
                # How many key features were used: null without key features or usage data.
                used = [(joined[h] > 0).cast("float64") for h in key_helpers if h in joined.columns]
                derived[spec.name] = (sum(used[1:], used[0]) if used and usage else _null())
                continue
            inputs = [derived.get(i, _constant(i, config) if i in CONSTANTS else
                                  joined.day if i == "_day" else
                                  joined[i] if i in joined.columns else _null())
                      for i in spec.compute.inputs]
            derived[spec.name] = FORMULAS[spec.compute.formula](*inputs)
    joined = joined.mutate(**derived)
    rules = [s for s in everything.values() if isinstance(s.compute, Rule)]
    collect = {s.name for s in specs} | {i for s in rules for i in s.compute.inputs}  # type: ignore[union-attr]
    present = [c for c in joined.columns if c in collect]
    return con.collect(joined.order_by("row").select("account_id", "as_of", *present))


def _apply_rules(frame: pd.DataFrame, rules: list[FeatureSpec], config: FeatureConfig) -> None:
    """Add the business-rule features (:class:`~features.definitions.Rule`) to the collected
    rows, in catalogue order: the same functions the scoring API applies."""
    nan = np.full(len(frame), np.nan)
    for spec in rules:
        rule: Rule = spec.compute  # type: ignore[assignment]
        inputs = [pd.to_numeric(frame[i], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                  if i in frame else nan for i in rule.inputs]
        extra = (config.survey_policy,) if rule.policy else ()
        frame[spec.name] = rule.function(*inputs, *extra)


def _unavailable(tables: Tables, specs: list[FeatureSpec]) -> set[str]:
    """Features the data cannot feed: their family's table is absent, or the input lacks their
    required column (e.g. active users when events carry no user ids)."""
    families = family_availability(tables)
    out = set()
    for spec in specs:
        if not families[spec.family]:
            out.add(spec.name)
        elif spec.requires:
            # Decided by the input's columns, never by its rows: rows after as_of must not matter.
            table, column = spec.requires.split(".")
            frame = tables.get(table)
            if frame is None or column not in frame or column in tables.absent_columns.get(table, ()):
                out.add(spec.name)
    return out


def _with_inputs(specs: list[FeatureSpec], config: FeatureConfig) -> list[FeatureSpec]:
    """The requested features plus every feature and helper their formulas read (transitively),
    in catalogue order, so that a formula's inputs are computed before it."""
    known = {s.name: s for s in (*catalogue(config), *helper_specs(config))}
    known.update({s.name: s for s in specs})
    names = {s.name for s in specs}
    todo = list(names)
    while todo:
        spec = known.get(todo.pop())
        if spec is None or not isinstance(spec.compute, Derived | Rule):
            continue
        inputs = list(spec.compute.inputs)
        if "_key_*_30d" in inputs:
            inputs += [h.name for h in helper_specs(config) if h.name.startswith("_key_")]
        for name in inputs:
            if name in known and name not in names:
                names.add(name)
                todo.append(name)
    return [s for s in known.values() if s.name in names]


def family_availability(tables: Tables) -> dict[str, bool]:
    """Which feature families the data could feed: a family is available when its table is
    present (its features are null otherwise). ``build_features`` also puts this in the frame's
    ``attrs["families"]``."""
    return {family: tables.get(table) is not None for family, table in FAMILY_TABLE.items()}


def _finish(frame: pd.DataFrame, specs: list[FeatureSpec], unavailable: set[str] = frozenset()
            ) -> pd.DataFrame:
    """Give every declared feature a column with its declared dtype (null when unavailable)."""
    out = {"account_id": frame["account_id"].astype("string"),
           "as_of": frame["as_of"].astype("datetime64[us]")}
    for spec in specs:
        values = (frame[spec.name] if spec.name in frame and spec.name not in unavailable
                  else pd.Series(None, index=frame.index))
        if spec.dtype == "category":
            out[spec.name] = values.astype("string")
        else:
            out[spec.name] = pd.to_numeric(values, errors="coerce").astype("float64")
    return pd.DataFrame(out)
