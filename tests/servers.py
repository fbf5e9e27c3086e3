"""Real servers for the tests: start a command on a free 127.0.0.1 port, wait until it answers,
and stop its whole process group afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHURN_") and k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    env.update(overrides)
    return env


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group we started (uvicorn + its workers)
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


@contextmanager
def start_server(argv: Callable[[int], list[str]], env: Mapping[str, str], workdir: Path,
                 *, ready: bool = False, timeout: float = 90.0) -> Iterator[Server]:
    """Run ``argv(port)`` in its own process group; wait for /healthz (and /readyz if ``ready``)."""
    for _attempt in range(3):
        port = free_port()
        log = workdir / f"server-{port}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(argv(port), env=clean_env(env), cwd=workdir, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + timeout
        path = "/readyz" if ready else "/healthz"
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(server.url + path, timeout=2).status_code == 200:
                    up = True
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        if up:
            try:
                yield server
            finally:
                stop(proc)
            return
        stop(proc)
        if "address already in use" not in server.output().lower():
            raise AssertionError(f"server did not come up on {server.url}:\n{server.output()}")
    raise AssertionError("no free port after 3 attempts")


def uvicorn_factory_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


