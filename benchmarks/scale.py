"""How the feature build's cost grows: DuckDB (in process) vs Spark (local mode), same run.

For each size (``--sizes``, millions of usage events; default 1, 10 and 30) it generates the
events of ``benchmarks/features.py`` (200 events per account, over 13 months) and builds the usage
features of the catalogue for every account at 12 monthly snapshot dates, once with DuckDB and
once with Spark (``local[*]``, the machine's cores), each in a fresh child process that loads the
same data folder as a user's command would: DuckDB's events read and validated by pandas, Spark's
read and validated by Spark (they never reach the Python process). It prints the seconds to read
and to build, events/s and peak memory (the child's, plus for Spark its JVM's) per size, and
checks the two frames are equal. Spark's time does not include starting the JVM;
$CHURN_BENCH_SPARK_MEMORY sets its driver memory (6g).

    .venv/bin/python benchmarks/scale.py                  # 1M, 10M, 30M (long: tens of minutes)
    .venv/bin/python benchmarks/scale.py --sizes 0.2 1    # a quick run
    .venv/bin/python benchmarks/scale.py --spark-up-to 1  # Spark on the smallest size only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

EVENTS_PER_ACCOUNT = 200
DAYS = 395
SNAPSHOTS = 12


def _features_benchmark():
    """benchmarks/features.py (its data generator, snapshot rule and feature list)."""
    spec = importlib.util.spec_from_file_location("features_benchmark", _HERE / "features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def monthly_dates() -> list[pd.Timestamp]:
    """12 month starts, the last one within the data (13 months from START)."""
    start = _features_benchmark().START
    return [start + pd.DateOffset(months=k) for k in range(DAYS // 30 - SNAPSHOTS + 1,
                                                            DAYS // 30 + 1)]


def peak_bytes(pids: list[int]) -> int:
    """Summed peak resident memory (VmHWM) of ``pids``."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh
                              if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            pass
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def child(engine: str, data: Path, result: Path) -> None:
    bench = _features_benchmark()
    from features.pointintime import build_features
    from features.sources import load_folder

    spark = None
    if engine == "spark":
        from features.spark import spark_session

        spark = spark_session("local[*]", "churn-risk-scale", {
            "spark.driver.memory": os.environ.get("CHURN_BENCH_SPARK_MEMORY", "6g"),
            "spark.ui.enabled": "false"})
        spark.range(1).count()  # the JVM is up before the clock starts
    start = time.perf_counter()
    # The user's path: DuckDB's events are read and validated by pandas; Spark reads and
    # validates them itself, and they never reach this process.
    tables = load_folder(data, spark)
    obs = pd.DataFrame([(a, d) for d in monthly_dates() for a in tables.accounts.account_id],
                       columns=["account_id", "as_of"])
    loaded = time.perf_counter()
    frame = build_features(tables, obs, specs=bench.usage_specs(), spark=spark)
    done = time.perf_counter()
    frame.to_parquet(result, index=False)
    print(json.dumps({"load": loaded - start, "build": done - loaded, "seconds": done - start,
                      "rows": len(frame),
                      "peak_bytes": peak_bytes([os.getpid(), *descendants(os.getpid())])}))


def measure(engine: str, data: Path, result: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", engine, "--data", str(data), "--result",
           str(result)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 30],
                   help="millions of usage events")
    p.add_argument("--engines", nargs="+", default=["duckdb", "spark"])
    p.add_argument("--spark-up-to", type=float, default=None,
                   help="run Spark only up to this many million events (a loaded machine)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--child", choices=["duckdb", "spark"])
    p.add_argument("--data", type=Path)
    p.add_argument("--result", type=Path)
    args = p.parse_args()
    if args.child:
        child(args.child, args.data, args.result)
        return 0

    bench = _features_benchmark()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average before: {load_average()}")
    print(f"{SNAPSHOTS} monthly snapshots, {len(bench.usage_specs())} usage features, "
          f"{EVENTS_PER_ACCOUNT} events per account\n")
    print(f"{'events':>8} {'accounts':>9} {'engine':>7} {'read s':>7} {'build s':>8} "
          f"{'total s':>8} {'M events/s':>11} {'peak GB':>8}  load average")
    failures = 0
    for size in args.sizes:
        events = int(size * 1_000_000)
        accounts = max(100, events // EVENTS_PER_ACCOUNT)
        with tempfile.TemporaryDirectory(prefix="churn-scale-") as tmp:
            data, results = Path(tmp) / "data", Path(tmp) / "results"
            data.mkdir()
            results.mkdir()
            bench.generate(events, accounts, DAYS, args.seed, data)
            res = {}
            engines = [e for e in args.engines if e != "spark" or args.spark_up_to is None
                       or size <= args.spark_up_to]
            for engine in engines:
                res[engine] = r = measure(engine, data, results / f"{engine}.parquet")
                if "error" in r:
                    print(f"{size:>7g}M {accounts:9,} {engine:>7} failed: {r['error']}")
                    failures += 1
                    continue
                print(f"{size:>7g}M {accounts:9,} {engine:>7} {r['load']:7.1f} {r['build']:8.1f} "
                      f"{r['seconds']:8.1f} "
                      f"{events / r['seconds'] / 1e6:11.2f} {r['peak_bytes'] / 1e9:8.2f}  "
                      f"{load_average()}", flush=True)
            ok = [e for e in engines if "error" not in res[e]]
            if len(ok) == 2:
                a, b = (pd.read_parquet(results / f"{e}.parquet") for e in ok)
                numeric = a.columns[2:]
                same = np.isclose(a[numeric].to_numpy(float), b[numeric].to_numpy(float),
                                  rtol=1e-9, atol=1e-9, equal_nan=True).all()
                same = same and a[["account_id", "as_of"]].equals(b[["account_id", "as_of"]])
                failures += not same
                print(f"{'':>8} values {'equal' if same else 'DIFFER'}; "
                      f"spark / duckdb time: {res['spark']['seconds'] / res['duckdb']['seconds']:.1f}x")
    print(f"\nload average after: {load_average()}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
