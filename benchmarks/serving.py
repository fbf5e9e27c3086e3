"""Serving benchmark: our API vs ``mlflow models serve`` on the same registered model, same load.

What it does, in one run (so both sides see the same machine load):

1. trains a LightGBM churn model on random values of the catalogue features (300 trees, or
   ``--trees``, with the hyperparameters ``churn train`` uses; the feature count is the
   catalogue's) and registers it
   with ``training.tracking`` -- the same pyfunc ``churn train`` logs -- in a temporary SQLite
   MLflow store;
2. starts our server (``serving.app.serve``, 2 workers) and ``mlflow models serve`` for
   ``models:/churn-risk/1`` (2 workers, ``--env-manager local``), both on 127.0.0.1, both in
   this process's environment (no thread-count variables are set for either);
3. checks both answer the same probability for the same account, and that our API answers a
   batch the same whether it is sent as records (``POST /v1/scores``) or column by column
   (``POST /v1/scores/columns``);
4. loads each with ``wrk`` (one thread, 16 connections, a fixed duration after a warm-up) and
   prints requests/s, accounts/s, p50/p99, the server's own CPU time per request (its processes'
   user + system time from /proc), how many of its processes shared the work ("2 busy": both
   workers served) and the ratios; ``--rounds`` repeats every scenario,
   interleaved, and reports medians, because a shared machine drifts between scenarios; batches
   are sent as records and also column by column (ours: ``/v1/scores/columns``; the peer:
   ``dataframe_split``);
5. measures, in process, what the model alone costs per account (prediction, and TreeSHAP both
   by LightGBM's ``pred_contrib`` and by the serving's tables, one thread) and prints the
   ceiling that TreeSHAP sets on requests with reasons; ``--treeshap lightgbm`` serves our
   reasons from ``pred_contrib`` instead (same numbers, slower);
6. in every round, a mixed load per server: single accounts on 8 connections while batches run on
   2 others (ours with reasons on both), to show what small requests suffer from big ones.

Run: ``.venv/bin/python benchmarks/serving.py [--seconds 10] [--rounds 3]``; needs ``wrk``
(``apt-get install wrk``). Only 127.0.0.1 is ever loaded, for a bounded time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.definitions import CATALOGUE, catalogue_records, categorical_features  # noqa: E402
from features.encoder import FeatureEncoder  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"errors\\": %%d, \\"non_2xx\\": %%d, " ..
    "\\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d}\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_frame(n: int, seed: int) -> pd.DataFrame:
    """Random rows inside every feature's declared bounds (the API refuses values outside)."""
    rng = np.random.default_rng(seed)
    cols = {}
    for spec in CATALOGUE:
        low, high = spec.bounds
        if spec.dtype == "category":
            cols[spec.name] = rng.choice(["a", "b", "c", "d"], size=n).astype(object)
        elif (low, high) == (0.0, 1.0):
            cols[spec.name] = rng.uniform(0, 1, n)
        else:
            low = 0.0 if low is None else low
            high = low + 60 if high is None else high
            cols[spec.name] = rng.uniform(low, high, n).round()
    return pd.DataFrame(cols)


def register_model(root: Path, trees: int = 300) -> tuple[str, dict]:
    """Train and register a model like `churn train` does; returns the tracking URI and encoder.

    The booster is also left at ``root / "booster.txt"``.
    """
    from training.tracking import ensure_experiment, log_and_register

    frame = random_frame(20_000, 1)
    names = list(frame.columns)
    encoder = FeatureEncoder(names, categorical_features()).fit(frame)
    X = encoder.transform(frame)  # noqa: N806
    logit = -1 + 0.05 * (30 - frame["active_days_30d"]) + (frame["plan"] == "a") * 0.8
    y = (np.random.default_rng(2).uniform(size=len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)
    from training.config import TrainConfig

    params = TrainConfig().lightgbm.params()  # the production hyperparameters, `trees` rounds
    booster = lgb.train({**params, "num_threads": 2},
                        lgb.Dataset(X, y, feature_name=names,
                                    categorical_feature=encoder.categorical_indices),
                        num_boost_round=trees)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = ensure_experiment("serving-benchmark", uri)
    booster_path = root / "booster.txt"
    booster.save_model(str(booster_path))
    metadata = {"model_name": "churn-risk", "encoder": encoder.to_dict(),
                "catalogue": catalogue_records(), "horizon_days": 90,
                "trained_at": "2026-01-01T00:00:00+00:00", "metrics": {}, "run_id": ""}
    example = frame.head(5)
    with mlflow.start_run(experiment_id=experiment):
        log_and_register(booster_path=booster_path, metadata=metadata, example=example,
                         example_proba=booster.predict(encoder.transform(example)),
                         model_name="churn-risk")
    return uri, encoder.to_dict()


def treeshap_cost(booster_path: Path, frame: pd.DataFrame, encoder_dict: dict) -> dict:
    """In-process CPU per account of the model alone, one thread: prediction, LightGBM's TreeSHAP
    (``pred_contrib``) and the serving's TreeSHAP tables (``serving.treeshap``, same numbers).

    Measured on a batch (the cheapest case per row), it bounds what any server of this model can
    do with reasons: even one that spent nothing else per request.
    """
    from serving.treeshap import fast_treeshap

    booster = lgb.Booster(model_file=str(booster_path))
    tables = fast_treeshap(booster)
    X = FeatureEncoder.from_dict(encoder_dict).transform(frame)  # noqa: N806
    out = {}
    for key, fn in (("predict_ms", lambda x: booster.predict(x, num_threads=1)),
                    ("pred_contrib_ms",
                     lambda x: booster.predict(x, pred_contrib=True, num_threads=1)),
                    ("tables_ms", tables.contributions)):
        fn(X[:50])  # warm
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            fn(X)
            best = min(best, (time.process_time() - t) / len(X) * 1000)
        out[key] = best
    return out


def start(argv: list[str], env: dict[str, str], log: Path, ready_path: str, port: int,
          timeout: float = 180) -> subprocess.Popen:
    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=log.parent)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{argv[:4]} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise SystemExit(f"{argv[:4]} did not start:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def cpu_by_process(session: int) -> dict[int, float]:
    """User + system CPU seconds of every live process in ``session``, by pid (Linux /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat, the session id
            found[int(stat.parent.name)] = ((int(fields[11]) + int(fields[12]))
                                            / os.sysconf("SC_CLK_TCK"))
    return found


def cpu_seconds(session: int) -> float | None:
    """User + system CPU seconds of every live process in ``session`` (Linux /proc; else None)."""
    found = cpu_by_process(session)
    return sum(found.values()) if found else None


def busy_processes(before: dict[int, float], after: dict[int, float]) -> int:
    """How many processes did at least a quarter of the CPU work between two readings.

    For a server with two workers this tells whether both served the load (2) or one took every
    connection (1): ``mlflow models serve``'s workers share one listening socket, and when wrk
    opens its 16 keep-alive connections at once one worker can accept all of them.
    """
    used = [after[pid] - before.get(pid, 0.0) for pid in after]
    total = sum(used)
    return sum(1 for u in used if total > 0 and u >= 0.25 * total)


def wait_idle(session: int, timeout: float = 120.0) -> None:
    """Wait until the server has finished what the last load left queued (wrk stops sending, but
    requests already received are still scored), so it does not slow the next scenario."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(session)
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(session)
        if now is None or now - last < 0.05:  # under 10 % of a core
            return
        last = now


def _wrk_argv(url: str, body: str, seconds: float, connections: int, workdir: Path) -> list[str]:
    script = workdir / f"body-{abs(hash(body))}.lua"
    script.write_text(LUA % body)
    return ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), url]


def _wrk_result(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    r = json.loads(line[len("RESULT "):])
    # Only answered requests count: a refusal (503 from a full queue) is fast and would inflate.
    r["rps"] = (r["requests"] - r["non_2xx"]) / (r["duration_us"] / 1e6)
    return r


def wrk(url: str, body: str, seconds: float, connections: int, workdir: Path) -> dict:
    out = subprocess.run(_wrk_argv(url, body, seconds, connections, workdir),
                         capture_output=True, text=True, check=True)
    return _wrk_result(out.stdout)


def wrk_mixed(small: tuple[str, str], big: tuple[str, str], seconds: float, workdir: Path
              ) -> tuple[dict, dict]:
    """Single accounts (url, body) on 8 connections while big batches run on 2 others: what a CS
    tool's lookups see while a nightly sync scores the portfolio on the same server."""
    background = subprocess.Popen(_wrk_argv(*big, seconds + 2, 2, workdir),
                                  stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the big requests are in flight before the small ones start
        small_result = wrk(*small, seconds, 8, workdir)
        out, _ = background.communicate(timeout=seconds + 60)
    finally:
        if background.poll() is None:
            background.kill()
    return small_result, _wrk_result(out)


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
            for row in frame.to_dict("records")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--trees", type=int, default=300,
                        help="Trees of the benchmark's model (the issue's targets are set for 300; "
                             "`churn train` on the demo data stops early at about 160)")
    parser.add_argument("--treeshap", choices=("tables", "lightgbm"), default="tables",
                        help="What computes our reasons (CHURN_TREESHAP): the serving's tables "
                             "or LightGBM's pred_contrib")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Run every scenario this many times, interleaved; report medians")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    root = Path(tempfile.mkdtemp(prefix="churn-serving-bench-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, load {os.getloadavg()}")
    uri, encoder = register_model(root, args.trees)
    cost = treeshap_cost(root / "booster.txt", random_frame(args.batch, 9), encoder)
    cost["treeshap_ms"] = cost["tables_ms" if args.treeshap == "tables" else "pred_contrib_ms"]
    cores = os.cpu_count() or 1
    print(f"model alone, in process, one thread, per account: predict {cost['predict_ms']:.3f} ms,"
          f" TreeSHAP: pred_contrib {cost['pred_contrib_ms']:.3f} ms, tables "
          f"{cost['tables_ms']:.3f} ms; ours uses {args.treeshap}, which alone caps "
          f"{cores} cores at {cores / cost['treeshap_ms'] * 1000:,.0f} explained accounts/s")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env.update(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    ours_port, mlflow_port = free_port(), free_port()
    ours_env = {**env, "CHURN_TRACKING_URI": uri, "CHURN_MODEL_URI": "models:/churn-risk/1",
                "CHURN_SCORE_STORE_URL": f"sqlite:///{root / 'scores.db'}",
                "CHURN_LOG_LEVEL": "warning", "CHURN_TREESHAP": args.treeshap}
    code = (f"from serving.app import serve; from serving.settings import ServingSettings; "
            f"serve(ServingSettings(port={ours_port}, workers=2, log_level='warning'))")
    ours = start([sys.executable, "-c", code], ours_env, root / "ours.log", "/readyz", ours_port)
    theirs = None
    try:
        theirs = start([str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
                        "models:/churn-risk/1", "--env-manager", "local", "-h", "127.0.0.1",
                        "-p", str(mlflow_port), "-w", "2"], env, root / "mlflow.log", "/ping",
                       mlflow_port)
        frame = random_frame(args.batch, 9)
        rows = records(frame)
        one = json.dumps({"accounts": [{"account_id": "A1", "features": rows[0]}]})
        batch = json.dumps({"accounts": [{"account_id": f"A{i}", "features": r}
                                         for i, r in enumerate(rows)]})
        names = list(frame.columns)
        # The same batch column by column: ours as POST /v1/scores/columns takes it, the peer's
        # as pandas' "split" orient (its documented form besides records).
        batch_columns = json.dumps({"account_id": [f"A{i}" for i in range(len(rows))],
                                    "features": {n: [r[n] for r in rows] for n in names}})
        one_mlflow = json.dumps({"dataframe_records": rows[:1]})
        batch_mlflow = json.dumps({"dataframe_records": rows})
        batch_mlflow_split = json.dumps({"dataframe_split": {
            "columns": names, "data": [[r[n] for n in names] for r in rows]}})
        ours_url = f"http://127.0.0.1:{ours_port}/v1/scores"
        mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"

        # Same model, same answer.
        a = httpx.post(ours_url, content=one, headers={"content-type": "application/json"},
                       timeout=30).json()["scores"][0]["churn_probability"]
        b = httpx.post(mlflow_url, content=one_mlflow,
                       headers={"content-type": "application/json"}, timeout=30).json()
        b = b["predictions"][0]
        assert abs(a - b) < 1e-9, (a, b)
        by_records, by_columns = (httpx.post(url, content=body, timeout=60,
                                             headers={"content-type": "application/json"}).json()
                                  for url, body in ((ours_url, batch),
                                                    (ours_url + "/columns", batch_columns)))
        assert by_columns == by_records, "records and columns must give the same scores"
        print(f"model: {args.trees} trees (training defaults), {len(CATALOGUE)} features; both "
              f"servers give p={a:.6f} for the same account\n")

        scenarios = [
            ("ours, 1 account, health + reasons", ours, ours_url, one, 1),
            ("ours, 1 account, health, explain=false", ours, ours_url + "?explain=false", one, 1),
            ("mlflow models serve, 1 account", theirs, mlflow_url, one_mlflow, 1),
            (f"ours, {args.batch} accounts, explain=false", ours, ours_url + "?explain=false",
             batch, args.batch),
            (f"ours, {args.batch} accounts, health + reasons", ours, ours_url, batch, args.batch),
            (f"mlflow models serve, {args.batch} accounts", theirs, mlflow_url, batch_mlflow,
             args.batch),
            (f"ours, {args.batch} accounts, columns, explain=false", ours,
             ours_url + "/columns?explain=false", batch_columns, args.batch),
            (f"mlflow models serve, {args.batch} accounts, split", theirs, mlflow_url,
             batch_mlflow_split, args.batch),
        ]
        mixed_scenarios = [
            ("ours, with reasons", ours, (ours_url, one), (ours_url, batch)),
            ("mlflow models serve", theirs, (mlflow_url, one_mlflow), (mlflow_url, batch_mlflow)),
        ]
        mixed: dict[str, list[tuple[dict, dict]]] = {name: [] for name, *_ in mixed_scenarios}
        results: dict[str, list[dict]] = {name: [] for name, *_ in scenarios}
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_} of {args.rounds} (load {os.getloadavg()[0]:.1f})", flush=True)
            for name, server, url, body, n in scenarios:
                wrk(url, body, args.warmup, args.connections, root)
                wait_idle(server.pid)
                before = cpu_by_process(server.pid)
                r = wrk(url, body, args.seconds, args.connections, root)
                after = cpu_by_process(server.pid)
                wait_idle(server.pid)
                r["accounts_per_s"] = r["rps"] * n
                # The server's own CPU per request: less sensitive than requests/s to how much
                # of the machine the server got (wrk and other jobs share the two cores).
                r["cpu_ms"] = (None if not before or not after or not r["requests"]
                               else (sum(after.values()) - sum(before.values()))
                               / r["requests"] * 1000)
                r["busy"] = busy_processes(before, after)
                results[name].append(r)
                cpu = ("" if r["cpu_ms"] is None else f"  server CPU {r['cpu_ms']:8.2f} ms/req, "
                       f"{r['busy']} busy")
                print(f"  {name:45s} {r['rps']:9.1f} req/s {r['accounts_per_s']:10.0f} "
                      f"accounts/s  p50 {r['p50_us'] / 1000:7.2f} ms  p99 "
                      f"{r['p99_us'] / 1000:7.2f} ms  errors {r['errors']}{cpu}", flush=True)
            for name, server, small, big_body in mixed_scenarios:
                wait_idle(server.pid)
                before = cpu_by_process(server.pid)
                one_r, big_r = wrk_mixed(small, big_body, args.seconds, root)
                after = cpu_by_process(server.pid)
                wait_idle(server.pid)
                mixed[name].append((one_r, big_r))
                busy = f", {busy_processes(before, after)} busy" if before and after else ""
                print(f"  mixed, {name:38s} 1 account: {one_r['rps']:7.1f} req/s  p50 "
                      f"{one_r['p50_us'] / 1000:7.2f} ms  p99 {one_r['p99_us'] / 1000:7.2f} ms; "
                      f"meanwhile {big_r['rps']:.1f} batches/s  errors "
                      f"{one_r['errors'] + big_r['errors']}{busy}", flush=True)

        def med(name: str, key: str) -> float:
            return float(np.median([r[key] for r in results[name]]))

        def per_round(a: str, b: str, key: str) -> list[float]:
            # nan when a short run completed no request of the peer's scenario
            return [x[key] / y[key] if y[key] else math.nan
                    for x, y in zip(results[a], results[b], strict=True)]

        single, single_ml = "ours, 1 account, health + reasons", "mlflow models serve, 1 account"
        bare = "ours, 1 account, health, explain=false"
        big, big_ml = (f"ours, {args.batch} accounts, explain=false",
                       f"mlflow models serve, {args.batch} accounts")
        big_cols, big_ml_split = (f"ours, {args.batch} accounts, columns, explain=false",
                                  f"mlflow models serve, {args.batch} accounts, split")
        print(f"\nmedian of {args.rounds} round(s):")
        for name, *_ in scenarios:
            cpu = [r["cpu_ms"] for r in results[name] if r["cpu_ms"] is not None]
            print(f"  {name:45s} {med(name, 'rps'):9.1f} req/s {med(name, 'accounts_per_s'):10.0f}"
                  f" accounts/s  p50 {med(name, 'p50_us') / 1000:7.2f} ms  p99 "
                  f"{med(name, 'p99_us') / 1000:7.2f} ms"
                  + (f"  server CPU {float(np.median(cpu)):8.2f} ms/req" if cpu else ""))

        def show(ratios: list[float]) -> str:
            return (f"{float(np.median(ratios)):.1f}x (rounds: "
                    + ", ".join(f"{x:.1f}x" for x in ratios) + ")")

        if args.trees != 300:
            print(f"\nnote: a {args.trees}-tree model; the issue's targets are set for 300 trees")
        print(f"\nratio single account (ours with reasons / mlflow), requests/s: "
              f"{show(per_round(single, single_ml, 'rps'))} (target >= 20x)")
        # The peer's throughput is bimodal: a round where one of its workers took every
        # connection runs on one core (about half the requests/s), so the ratio is also shown
        # against the rounds where it used both workers, as ours always does.
        both = [i for i, r in enumerate(results[single_ml]) if r["busy"] >= 2]
        ratios = per_round(single, single_ml, "rps")
        print(f"  the same, only the {len(both)} round(s) where mlflow used both workers: "
              + (show([ratios[i] for i in both]) if both else "none"))
        print(f"ratio single account without reasons: {show(per_round(bare, single_ml, 'rps'))}")
        ceiling = (os.cpu_count() or 1) / cost["treeshap_ms"] * 1000 / med(single_ml, "rps")
        print(f"ceiling with reasons: TreeSHAP alone, on every core and nothing else, would be "
              f"{ceiling:.1f}x mlflow")
        if all(r["cpu_ms"] for r in results[single] + results[single_ml]):
            print("ratio single account with reasons, server CPU per request (mlflow / ours): "
                  + show([1 / x for x in per_round(single, single_ml, 'cpu_ms')]))
        if all(r["cpu_ms"] for r in results[bare] + results[single_ml]):
            # An estimate of a request with reasons: its TreeSHAP (measured on a batch, the
            # cheapest case) on top of everything a request without reasons costs. Against the
            # peer's CPU per request it shows what the ratio is made of (noise between rounds
            # can put the measured ratio a little above it).
            floor = cost["treeshap_ms"] + med(bare, "cpu_ms")
            print(f"CPU estimate with reasons: TreeSHAP {cost['treeshap_ms']:.2f} ms + our "
                  f"request without reasons {med(bare, 'cpu_ms'):.2f} ms = {floor:.2f} ms per "
                  f"request; against mlflow's {med(single_ml, 'cpu_ms'):.2f} ms that is about "
                  f"{med(single_ml, 'cpu_ms') / floor:.1f}x")
        p99s = ", ".join(f"{r['p99_us'] / 1000:.1f}" for r in results[single])
        print(f"p99 single account with reasons: {med(single, 'p99_us') / 1000:.2f} ms "
              f"(rounds: {p99s} ms; target <= 15 ms)")
        rates = ", ".join(f"{r['accounts_per_s']:,.0f}" for r in results[big])
        print(f"batches of {args.batch} without reasons: {med(big, 'accounts_per_s'):,.0f} "
              f"accounts/s (rounds: {rates}; target >= 40,000); "
              f"{show(per_round(big, big_ml, 'rps'))} mlflow")
        rates = ", ".join(f"{r['accounts_per_s']:,.0f}" for r in results[big_cols])
        print(f"batches of {args.batch} without reasons, column by column: "
              f"{med(big_cols, 'accounts_per_s'):,.0f} accounts/s (rounds: {rates}; target >= "
              f"40,000); {show(per_round(big_cols, big_ml_split, 'rps'))} mlflow (split)")
        print(f"\nmixed load, 1 account on 8 connections while batches of {args.batch} run on 2 "
              f"others (median of {args.rounds} round(s)):")
        for name, runs in mixed.items():
            print(f"  {name:22s} 1 account: {np.median([a['rps'] for a, _ in runs]):7.1f} req/s  p50 "
                  f"{np.median([a['p50_us'] for a, _ in runs]) / 1000:7.2f} ms  p99 "
                  f"{np.median([a['p99_us'] for a, _ in runs]) / 1000:7.2f} ms; batches "
                  f"{np.median([b['rps'] for _, b in runs]):.1f}/s")
        print(f"load after: {os.getloadavg()}")
    finally:
        stop(ours)
        if theirs is not None:
            stop(theirs)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
