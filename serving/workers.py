"""Several uvicorn workers, each with its own listening socket on the same port (SO_REUSEPORT).

Why not ``uvicorn --workers``: its workers share one listening socket, and asyncio accepts every
pending connection at once (up to the backlog) in whichever worker wakes first. A CS platform
opens its pool of keep-alive connections in a burst, so one worker can end up with all of them
while the others sit idle, with the throughput of one worker and longer queues. With one socket per
worker
and ``SO_REUSEPORT`` the kernel spreads new connections over the workers by hashing the
connection, so a burst is shared.

A worker binds its socket at start and listens once uvicorn has run the app's lifespan, which
only starts the model load (:mod:`serving.lifecycle`): ``/healthz`` answers while the model
loads. Each worker has the connection limits of :mod:`serving.limits`. The supervisor restarts a
worker that dies while serving (the new one listens once its model load has ended), stops
everything when a worker fails before it is up (a bad configuration fails the same way every
time) and passes SIGINT/SIGTERM on for a graceful shutdown; if the supervisor itself is killed,
the kernel stops its workers (``PR_SET_PDEATHSIG``).
A second server on the same port is refused, also while the first one is still loading
(:func:`claim_port`).
Linux only: other systems accept ``SO_REUSEPORT`` without balancing connections
(:func:`serving.app.serve` falls back to uvicorn's workers there).

Metrics: the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh temporary directory
(replacing any value it inherited: the directory must start empty) and removes it at exit, so
``/metrics`` on any worker reports the sum over all workers; a dead worker's live gauges are
dropped, its counters kept.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import multiprocess

from serving.observability import configure_logging

log = logging.getLogger("churn.serving.workers")

#: A worker that exits within this many seconds of starting is a startup failure (no restart).
STARTUP_SECONDS = 120.0


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket that shares ``port`` with the other workers."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this platform has no SO_REUSEPORT: run one worker per process instead")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` if any socket holds ``host:port``.

    The probe binds *without* ``SO_REUSEPORT``: a reuseport bind would silently join another
    ``churn serve`` already listening there (same user), and the two would split the traffic.
    ``SO_REUSEADDR`` lets it pass connections of an earlier run still in TIME_WAIT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


@contextlib.contextmanager
def claim_port(host: str, port: int) -> Iterator[None]:
    """Hold ``port`` for this ``churn serve`` while the block runs; ``OSError`` if another holds it.

    The port check alone leaves a window: a worker binds its socket before it loads the model and
    listens only afterwards, and Linux lets a bind with ``SO_REUSEADDR`` (the probe's) share a
    port nobody listens on yet. A second ``churn serve`` started during the first one's model
    load would pass the probe, and its workers would join the first one's through
    ``SO_REUSEPORT``. So :func:`serving.app.serve` also takes a name in Linux's abstract
    Unix-socket namespace, one per port (whatever the host: a server on 127.0.0.1 would take local traffic
    from one on 0.0.0.0 of the same port). The kernel releases it when the process ends, however
    it ends, so a crash leaves nothing to clean up. Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    lock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0churn-serve:{port}")
    except OSError as exc:
        lock.close()
        lock = None
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"cannot listen on {host}:{port}: address already in use by another "
                          "churn serve (starting or running)") from exc
        # A sandbox that forbids the name must not stop the server: only this check is lost.
        log.warning("cannot claim port %s against a second churn serve: %s", port, exc,
                    extra={"event": "port_claim_failed"})
    try:
        yield
    finally:
        if lock is not None:
            lock.close()


def _exit_with_supervisor(supervisor: int) -> None:
    """Have the kernel send this process SIGTERM when the supervisor dies, even by SIGKILL.

    Without it, workers of a killed supervisor keep serving as orphans that no one restarts,
    stops or counts, and they hold the port against the next start.
    """
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot ask to be stopped with the supervisor",
                    extra={"event": "pdeathsig_failed", "errno": ctypes.get_errno()})
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(host: str, port: int, log_level: str, supervisor: int, restart: bool = False) -> None:
    """One worker process: its own socket, the app built from the ``CHURN_*`` environment.

    A restarted worker listens only once its model load has ended: the kernel would otherwise
    hand it half the new connections while it can only answer 503.
    """
    import uvicorn

    _exit_with_supervisor(supervisor)
    if restart:
        os.environ["CHURN_LOAD_BEFORE_LISTENING"] = "true"
    sock = reuseport_socket(host, port)
    from serving.limits import uvicorn_options
    from serving.settings import get_settings

    config = uvicorn.Config("serving.app:create_app", factory=True, host=host, port=port,
                            log_level=log_level, **uvicorn_options(get_settings()))
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(host: str, port: int, workers: int, log_level: str = "info") -> None:
    """Run ``workers`` worker processes on ``host:port`` until SIGINT/SIGTERM (blocks).

    The workers rebuild their settings from the ``CHURN_*`` environment (the caller exports them).

    Raises:
        OSError: the port is taken (by another program or another ``churn serve``).
        RuntimeError: a worker failed to start (its log says why).
    """
    configure_logging(log_level)  # the supervisor's own lines, as JSON like the workers'
    # Fail here, with the port in the message, rather than in every worker.
    try:
        check_port_free(host, port)
        reuseport_socket(host, port).close()
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    context = multiprocessing.get_context("spawn")
    stopping = False
    # Set before the workers start: the client library picks its storage when it is imported.
    previous_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = tempfile.mkdtemp(prefix="churn-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    def request_stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def start(restart: bool = False) -> tuple[BaseProcess, float]:
        proc = context.Process(target=_worker, args=(host, port, log_level, os.getpid(), restart),
                                daemon=False)
        proc.start()
        return proc, time.monotonic()

    procs = [start() for _ in range(workers)]
    failure: str | None = None
    try:
        while not stopping and failure is None:
            time.sleep(0.2)
            for i, (proc, started) in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                # uvicorn exits with 1 (app failed to build) or 3 (lifespan failed): a
                # configuration error that a restart repeats. Killed by a signal: restart.
                if (proc.exitcode or 0) > 0 and time.monotonic() - started < STARTUP_SECONDS:
                    failure = (f"worker {proc.pid} exited with code {proc.exitcode} while "
                               "starting; see its log above")
                    break
                log.warning("worker exited; starting a new one",
                            extra={"event": "worker_restart", "pid": proc.pid,
                                   "exitcode": proc.exitcode})
                multiprocess.mark_process_dead(proc.pid, metrics_dir)
                procs[i] = start(restart=True)
    finally:
        for proc, _ in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM
        deadline = time.monotonic() + 30
        for proc, _ in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if previous_dir is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous_dir
    if failure is not None:
        raise RuntimeError(failure)
