"""Feature pipeline speed: ours (Ibis on DuckDB) vs an idiomatic pandas implementation.

Generates ``--events`` usage events (default 10 million) over ``--accounts`` accounts (50,000) and
``--days`` days (180), then builds the usage features (both usage families of the catalogue: event
and active-day windows over 7/30/90/180 days, the previous 30 days, trend, 90-day slope, volatility,
recency, distinct features and users, catalogue share, per-user and per-seat ratios) for every
account at ``--snapshots`` dates (12) and at a single date, with both implementations in the same
run. Each implementation runs in a fresh child process that reads the same Parquet file, so its
peak memory (max RSS) is its own. The values are checked to be equal, then the script prints
events/s, the ratio and peak memory.

    .venv/bin/python benchmarks/features.py               # the full benchmark (a few minutes)
    .venv/bin/python benchmarks/features.py --events 200000 --accounts 2000   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# This file is named like the package it measures: keep its directory off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

START = pd.Timestamp("2024-01-01")
EPOCH = pd.Timestamp("1970-01-01")
N_EVENT_TYPES = 20


def generate(n_events: int, n_accounts: int, days: int, seed: int, out: Path) -> None:
    """Usage events (account, timestamp, event, user, quantity), accounts and subscriptions."""
    rng = np.random.default_rng(seed)
    # Fat-tailed activity: a few accounts produce most events; each has 1-30 users.
    weight = rng.lognormal(0.0, 1.0, n_accounts)
    acc = rng.choice(n_accounts, size=n_events, p=weight / weight.sum()).astype(np.int32)
    users = rng.integers(1, 31, n_accounts)
    # Activity that drifts over time per account (so trends and slopes are not all zero).
    day = (rng.beta(1.0 + (acc % 3), 1.0 + (acc % 2), n_events) * days).astype(np.int64)
    seconds = rng.integers(0, 86_400, n_events)
    order = np.lexsort((day, acc))
    acc, day, seconds = acc[order], day[order], seconds[order]
    ids = np.array([f"A{i:06d}" for i in range(n_accounts)], dtype=object)
    user = (rng.random(n_events) * users[acc]).astype(np.int64)
    event_p = 1.0 / np.arange(1, N_EVENT_TYPES + 1)
    events = pd.DataFrame({
        "account_id": pd.array(ids[acc], dtype="string[pyarrow]"),
        "timestamp": (START.to_datetime64().astype("datetime64[us]")
                      + (day * 86_400 + seconds).astype("timedelta64[s]")),
        "event": pd.array(np.array([f"feature_{k}" for k in range(N_EVENT_TYPES)], dtype=object)[
            rng.choice(N_EVENT_TYPES, n_events, p=event_p / event_p.sum())], dtype="string[pyarrow]"),
        "user_id": pd.array(np.char.add(np.char.add(ids[acc].astype(str), "-u"), user.astype(str)),
                            dtype="string[pyarrow]"),
        "quantity": rng.integers(1, 6, n_events).astype(np.float64),
    })
    events.to_parquet(out / "usage_events.parquet", index=False)
    pd.DataFrame({"account_id": pd.array(ids, dtype="string[pyarrow]"),
                  "seats": users.astype(np.float64) + 2}).to_parquet(out / "accounts.parquet",
                                                                     index=False)
    pd.DataFrame({"account_id": pd.array(ids, dtype="string[pyarrow]"),
                  "start_date": np.full(n_accounts, (START - pd.Timedelta(days=400)).to_datetime64()
                                        ).astype("datetime64[us]"),
                  "end_date": pd.Series(pd.NaT, index=range(n_accounts), dtype="datetime64[us]"),
                  "mrr": 100.0, "billing_period_months": 1.0}).to_parquet(
        out / "subscriptions.parquet", index=False)


def read_events(data: Path) -> pd.DataFrame:
    """The events as pandas (Arrow-backed strings), read the same way for both implementations."""
    import pyarrow.parquet as pq

    return pq.read_table(data / "usage_events.parquet").to_pandas()


def snapshot_dates(days: int, n: int) -> list[pd.Timestamp]:
    """``n`` dates evenly spread over the last part of the data, the last one the day after it."""
    last = START + pd.Timedelta(days=days)
    step = max(1, (days - 30) // n)
    return [last - pd.Timedelta(days=step * k) for k in reversed(range(n))]


def usage_specs():
    from features.definitions import CATALOGUE

    return [s for s in CATALOGUE if s.family in ("usage_depth", "usage_frequency")
            and not s.name.startswith("key_")]


# ------------------------------------------------------------------------------------------------
# ours: the project's pipeline, restricted to the usage features


def run_ours(data: Path, dates: list[pd.Timestamp]) -> pd.DataFrame:
    from features.contract import ACCOUNTS, SUBSCRIPTIONS, Tables, validate_table
    from features.pointintime import build_features

    # The small tables go through validation; the events are already typed (validating 10 M rows
    # is a load-time cost, not part of building features).
    tables = Tables(
        accounts=validate_table(ACCOUNTS, pd.read_parquet(data / "accounts.parquet"), "accounts"),
        subscriptions=validate_table(SUBSCRIPTIONS, pd.read_parquet(data / "subscriptions.parquet"),
                                     "subscriptions"),
        usage_events=read_events(data))
    obs = pd.DataFrame([(a, d) for d in dates for a in tables.accounts.account_id],
                       columns=["account_id", "as_of"])
    start = time.perf_counter()
    frame = build_features(tables, obs, specs=usage_specs())
    return frame, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# pandas: the same features, written the way a pandas user would (group-by per snapshot and window)


def run_pandas(data: Path, dates: list[pd.Timestamp]) -> pd.DataFrame:
    accounts = pd.read_parquet(data / "accounts.parquet")
    ev = read_events(data)
    start = time.perf_counter()
    ev["day"] = (ev["timestamp"] - EPOCH).dt.days
    ev["quantity"] = ev["quantity"].fillna(1.0)
    daily = ev.groupby(["account_id", "day"], observed=True, sort=False).agg(
        events=("quantity", "sum")).reset_index()
    daily["events_sq"] = daily["events"] ** 2
    daily["events_x_day"] = daily["events"] * daily["day"]
    ev_days = ev[["account_id", "day", "event"]].drop_duplicates()
    user_days = ev.loc[ev["user_id"].notna(), ["account_id", "day", "user_id"]].drop_duplicates()
    first_seen = ev_days.groupby("event")["day"].min()
    ids = accounts.set_index("account_id").index
    seats = accounts.set_index("account_id")["seats"]
    out = []
    for as_of in dates:
        d = (as_of - EPOCH).days
        f = pd.DataFrame(index=ids)

        def window(frame: pd.DataFrame, days: int, offset: int = 0, d: int = d) -> pd.DataFrame:
            return frame[(frame["day"] >= d - days - offset) & (frame["day"] < d - offset)]

        for days in (7, 30, 90, 180):
            w = window(daily, days).groupby("account_id", observed=True)
            f[f"events_{days}d"] = w["events"].sum()
            f[f"active_days_{days}d"] = w.size()
        f["events_prev_30d"] = window(daily, 30, 30).groupby("account_id", observed=True)[
            "events"].sum()
        f["_sq30"] = window(daily, 30).groupby("account_id", observed=True)["events_sq"].sum()
        f["_xd90"] = window(daily, 90).groupby("account_id", observed=True)["events_x_day"].sum()
        f = f.fillna(0.0)
        f["days_since_last_event"] = d - daily[daily["day"] < d].groupby(
            "account_id", observed=True)["day"].max()
        for days in (30, 90):
            f[f"distinct_events_{days}d"] = window(ev_days, days).groupby(
                "account_id", observed=True)["event"].nunique()
        f["active_users_30d"] = window(user_days, 30).groupby("account_id", observed=True)[
            "user_id"].nunique()
        f[["distinct_events_30d", "distinct_events_90d", "active_users_30d"]] = f[
            ["distinct_events_30d", "distinct_events_90d", "active_users_30d"]].fillna(0.0)
        size = float((first_seen < d).sum())
        f["catalogue_share_30d"] = f["distinct_events_30d"] / size if size else np.nan
        f["active_users_per_seat_30d"] = (f["active_users_30d"] / seats).where(seats > 0)
        f["events_per_active_user_30d"] = (f["events_30d"] / f["active_users_30d"]).where(
            f["active_users_30d"] > 0)
        prev = f["events_prev_30d"]
        f["events_trend_30d"] = ((f["events_30d"] - prev) / prev).where(prev > 0)
        total = f["events_90d"]
        sxy = f["_xd90"] - d * total
        slope = (90 * sxy + 4095 * total) / (90 * 247065 - 4095**2)
        f["events_slope_90d"] = (slope * 8100 / total).where(total > 0)
        mean = f["events_30d"] / 30
        sd = np.sqrt((f["_sq30"] / 30 - mean**2).clip(lower=0))
        f["events_volatility_30d"] = (sd / mean).where(f["events_30d"] > 0)
        f["as_of"] = as_of
        out.append(f.reset_index())
    frame = pd.concat(out, ignore_index=True)
    names = [s.name for s in usage_specs()]
    frame = frame[["account_id", "as_of", *names]]
    return frame, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------


def child(kind: str, data: Path, dates: list[str], result: Path) -> None:
    """Run one implementation; write its frame and print its time and peak memory as JSON."""
    run = run_ours if kind == "ours" else run_pandas
    frame, seconds = run(data, [pd.Timestamp(d) for d in dates])
    frame.to_parquet(result, index=False)
    print(json.dumps({"seconds": seconds, "peak_bytes": peak_rss(), "rows": len(frame)}))


def peak_rss() -> int:
    """This process's peak resident memory. VmHWM, not ru_maxrss: on Linux ru_maxrss survives
    fork+exec, so a child would report the (larger) parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(kind: str, data: Path, dates: list[pd.Timestamp], result: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--result", str(result),
           "--dates", ",".join(d.strftime("%Y-%m-%d") for d in dates)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(ours: Path, theirs: Path) -> int:
    """Number of differing values (numbers within 1e-9 relative; nulls must match)."""
    a = pd.read_parquet(ours).sort_values(["as_of", "account_id"]).reset_index(drop=True)
    b = pd.read_parquet(theirs).sort_values(["as_of", "account_id"]).reset_index(drop=True)
    assert list(a.columns) == list(b.columns), (a.columns, b.columns)
    assert a[["account_id", "as_of"]].astype(str).equals(b[["account_id", "as_of"]].astype(str))
    bad = 0
    for col in a.columns[2:]:
        x, y = a[col].to_numpy(dtype=float), b[col].to_numpy(dtype=float)
        same = (np.isnan(x) & np.isnan(y)) | np.isclose(x, y, rtol=1e-9, atol=1e-9)
        if not same.all():
            print(f"  MISMATCH {col}: {int((~same).sum())} values, e.g. ours {x[~same][:3]} "
                  f"pandas {y[~same][:3]}")
            bad += int((~same).sum())
    return bad


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--accounts", type=int, default=50_000)
    p.add_argument("--days", type=int, default=180)
    p.add_argument("--snapshots", type=int, default=12)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--child", choices=["ours", "pandas"])
    p.add_argument("--data", type=Path)
    p.add_argument("--dates")
    p.add_argument("--result", type=Path)
    args = p.parse_args()
    if args.child:
        child(args.child, args.data, args.dates.split(","), args.result)
        return 0

    with tempfile.TemporaryDirectory(prefix="churn-bench-") as tmp:
        data = Path(tmp)
        t = time.perf_counter()
        generate(args.events, args.accounts, args.days, args.seed, data)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; load average before: {load_average()}")
        print(f"data: {args.events:,} events, {args.accounts:,} accounts, {args.days} days "
              f"(generated in {time.perf_counter() - t:.1f} s)")
        failures = 0
        for label, dates in (("12 snapshots" if args.snapshots == 12 else
                              f"{args.snapshots} snapshots",
                              snapshot_dates(args.days, args.snapshots)),
                             ("1 snapshot", snapshot_dates(args.days, 1))):
            res = {k: measure(k, data, dates, data / f"{k}.parquet") for k in ("ours", "pandas")}
            bad = compare(data / "ours.parquet", data / "pandas.parquet")
            failures += bad
            print(f"\n{label} ({res['ours']['rows']:,} rows x {len(usage_specs())} features), "
                  f"values {'equal' if not bad else f'DIFFER in {bad} cells'}:")
            print(f"  {'':8} {'seconds':>8} {'M events/s':>11} {'peak GB':>8}")
            for k in ("ours", "pandas"):
                r = res[k]
                print(f"  {k:8} {r['seconds']:8.2f} {args.events / r['seconds'] / 1e6:11.2f} "
                      f"{r['peak_bytes'] / 1e9:8.2f}")
            print(f"  ratio (pandas time / ours): {res['pandas']['seconds'] / res['ours']['seconds']:.2f}x")
        print(f"\nload average after: {load_average()}")
        return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
