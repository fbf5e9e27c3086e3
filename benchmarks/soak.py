"""Soak: our server at a fixed request rate for a bounded time; errors, p99 and memory per minute.

What it does:

1. trains and registers a model as ``benchmarks/serving.py`` does (``--trees`` trees), in a
   temporary SQLite MLflow store;
2. starts ``serving.app.serve`` (what ``churn serve`` runs; ``--workers`` workers) on 127.0.0.1;
3. sends ``POST /v1/scores`` of ``--batch`` accounts with reasons at a fixed rate (``--rate``
   requests per second, open loop: a slow answer does not slow the sender) for ``--minutes``
   minutes, at most 5;
4. prints, for every minute: requests sent, errors (transport errors and any status but 200),
   p50/p99 latency, and the resident memory (RSS) of the supervisor and of each worker; then the
   totals.

A leak shows as RSS growing minute after minute; an overload as errors or a p99 that climbs.
There is no peer here: it checks the server against itself over time.

Run: ``.venv/bin/python benchmarks/soak.py [--minutes 5] [--rate 40] [--workers 2]``. Only
127.0.0.1 is loaded, for at most 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serving import free_port, random_frame, records, register_model, start, stop  # noqa: E402
from features.definitions import CATALOGUE  # noqa: E402

MAX_MINUTES = 5.0


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def workers(supervisor: int) -> list[int]:
    """The server's processes that serve: the supervisor's children that hold a model (the
    ``multiprocessing`` resource tracker, if any, is small and is left out by RSS)."""
    return [p for p in children(supervisor) if (rss_mib(p) or 0) > 60]


def memory_line(supervisor: int) -> str:
    parts = [f"supervisor {rss_mib(supervisor) or 0:.0f}"]
    parts += [f"worker {pid} {rss_mib(pid) or 0:.0f}" for pid in workers(supervisor)]
    return "RSS MiB: " + ", ".join(parts)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def soak(url: str, bodies: list[dict], rate: float, seconds: float, supervisor: int
               ) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    minute: dict = {"sent": 0, "lat": [], "errors": 0}
    totals = {"sent": 0, "errors": 0}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(body: dict) -> None:
            started = time.perf_counter()
            try:
                r = await client.post("/v1/scores", json=body)
                ok = r.status_code == 200
                key = None if ok else f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                ok, key = False, type(exc).__name__
            elapsed = time.perf_counter() - started
            if ok:
                latencies.append(elapsed)
                minute["lat"].append(elapsed)
            else:
                errors[key] = errors.get(key, 0) + 1
                minute["errors"] += 1
                totals["errors"] += 1

        start_t = time.perf_counter()
        next_report = start_t + 60
        tasks: set[asyncio.Task] = set()
        i = 0
        print(f"minute 0: {memory_line(supervisor)}", flush=True)
        while True:
            now = time.perf_counter()
            if now - start_t >= seconds:
                break
            due = start_t + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.create_task(one(bodies[i % len(bodies)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            minute["sent"] += 1
            totals["sent"] += 1
            if time.perf_counter() >= next_report:
                n = round((next_report - start_t) / 60)
                print(f"minute {n}: sent {minute['sent']}, errors {minute['errors']}, "
                      f"p50 {percentile(minute['lat'], 50) * 1000:.1f} ms, "
                      f"p99 {percentile(minute['lat'], 99) * 1000:.1f} ms; "
                      f"{memory_line(supervisor)}", flush=True)
                minute = {"sent": 0, "lat": [], "errors": 0}
                next_report += 60
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        if minute["sent"]:
            print(f"last {time.perf_counter() - (next_report - 60):.0f} s: sent {minute['sent']}, "
                  f"errors {minute['errors']}, p99 {percentile(minute['lat'], 99) * 1000:.1f} ms; "
                  f"{memory_line(supervisor)}", flush=True)
    return {"sent": totals["sent"], "errors": errors, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "answered": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--batch", type=int, default=10, help="accounts per request")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trees", type=int, default=160)
    args = parser.parse_args()
    minutes = min(args.minutes, MAX_MINUTES)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; {minutes:g} min at {args.rate:g} req/s of {args.batch} "
          f"accounts, {args.workers} workers, {args.trees} trees", flush=True)
    with tempfile.TemporaryDirectory(prefix="churn-soak-") as tmp:
        root = Path(tmp)
        uri, _ = register_model(root, args.trees)
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHURN_")},
               "CHURN_TRACKING_URI": uri, "CHURN_MODEL_URI": "models:/churn-risk/1",
               "CHURN_WORKERS": str(args.workers), "CHURN_PORT": str(port),
               "CHURN_POLL_SECONDS": "0", "CHURN_LOG_REQUESTS": "false",
               "CHURN_LOG_LEVEL": "warning",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        code = "from serving.app import serve; serve()"
        proc = start([sys.executable, "-c", code], env, root / "server.log", "/readyz", port)
        try:
            deadline = time.monotonic() + 60  # every worker up
            while len(workers(proc.pid)) < args.workers and time.monotonic() < deadline:
                time.sleep(0.5)
            frame = random_frame(args.batch * 50, 3)
            for spec in CATALOGUE:  # within each feature's bounds: every request is valid
                if spec.dtype != "category":
                    frame[spec.name] = frame[spec.name].clip(*spec.bounds)
            rows = records(frame)
            bodies = [{"accounts": [{"account_id": f"A{j}", "features": rows[j]}
                                    for j in range(k * args.batch, (k + 1) * args.batch)]}
                      for k in range(50)]
            result = asyncio.run(soak(f"http://127.0.0.1:{port}", bodies, args.rate,
                                      minutes * 60, proc.pid))
        finally:
            stop(proc)
    print(f"total: sent {result['sent']}, answered 200 {result['answered']}, errors "
          f"{sum(result['errors'].values())} {result['errors'] or ''}, p50 "
          f"{result['p50'] * 1000:.1f} ms, p99 {result['p99'] * 1000:.1f} ms; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
