"""Hardening against real uvicorn servers on 127.0.0.1: connection limits, slow and oversized
requests, start-up with the registry down or a cut champion, the exposure rule when uvicorn is
started by hand on every interface, and a client that goes away mid-body."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from serving.model import UNREACHABLE, UNREADABLE
from tests.servers import Server, free_port, start_server, uvicorn_factory_argv
from tests.serving.conftest import register_model_dir, wait_for_model

HEADER_LIMIT = 4096
MAX_CONNECTIONS = 12
SCORES_HEAD = (b"POST /v1/scores HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Content-Length: 5000\r\n\r\n")


def serve_argv(port: int) -> list[str]:
    """``serving.app.serve`` (what ``churn serve`` runs), its settings from ``CHURN_*``."""
    code = ("from serving.app import serve; from serving.settings import ServingSettings; "
            f"serve(ServingSettings(port={port}))")
    return [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def limited(local_registry, server_workdir) -> Iterator[Server]:
    """`churn serve` on the tiny model with small limits, so that each one is quick to reach."""
    env = {"CHURN_TRACKING_URI": local_registry.tracking_uri,
           "CHURN_MAX_HEADER_BYTES": str(HEADER_LIMIT), "CHURN_HEADER_TIMEOUT_SECONDS": "1",
           "CHURN_BODY_TIMEOUT_SECONDS": "1", "CHURN_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
           "CHURN_POLL_SECONDS": "0", "CHURN_LOG_LEVEL": "warning"}
    with start_server(serve_argv, env, server_workdir, ready=True) as server:
        yield server


def _address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _first_line(sock: socket.socket) -> bytes:
    """The status line the server sent (b"" if it just closed); raises on a timeout."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data.split(b"\r\n", 1)[0]


def test_oversized_headers_get_431_and_do_not_stall_others(limited):
    with socket.create_connection(_address(limited), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        try:
            for _ in range(1000):  # up to 50 MB, as the probe sent
                sock.sendall(b"a" * 50_000)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: expected
        assert b" 431 " in _first_line(sock) + b" "
    started = time.monotonic()
    assert httpx.get(limited.url + "/healthz", headers={"Host": "localhost"}).status_code == 200
    assert time.monotonic() - started < 2


def test_idle_and_half_sent_connections_are_closed(limited):
    address = _address(limited)
    idle = [socket.create_connection(address, timeout=10) for _ in range(3)]
    half_head = socket.create_connection(address, timeout=10)
    half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: loc")
    half_body = socket.create_connection(address, timeout=10)
    half_body.sendall(SCORES_HEAD + b'{"accounts": [')
    try:
        for sock in idle:
            assert _first_line(sock) in (b"", b"HTTP/1.1 408 Request Timeout")
        assert _first_line(half_head) == b"HTTP/1.1 408 Request Timeout"
        assert _first_line(half_body).startswith(b"HTTP/1.1 4")  # 408 (or 499 logged, closed)
    finally:
        for sock in [*idle, half_head, half_body]:
            sock.close()


def test_connections_beyond_the_limit_are_refused_and_healthz_recovers(limited):
    address = _address(limited)
    conns = [socket.create_connection(address, timeout=10) for _ in range(MAX_CONNECTIONS + 8)]
    try:
        for sock in conns[-5:]:  # beyond the limit: answered and closed at once
            assert _first_line(sock) == b"HTTP/1.1 503 Service Unavailable"
    finally:
        for sock in conns:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(limited.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    assert httpx.get(limited.url + "/healthz").status_code == 200


def test_a_client_leaving_mid_body_is_not_a_server_error(limited):
    for _ in range(3):
        with socket.create_connection(_address(limited), timeout=10) as sock:
            sock.sendall(SCORES_HEAD + b'{"accounts": [')
    time.sleep(0.5)
    metrics = httpx.get(limited.url + "/metrics").text
    scores = [line for line in metrics.splitlines()
              if line.startswith("churn_http_request_duration_seconds_count")
              and 'route="/v1/scores"' in line]
    assert scores and not any('status="500"' in line for line in scores), scores
    assert any('status="499"' in line for line in scores), scores
    assert '"event": "internal_error"' not in limited.output()


def test_the_server_listens_at_once_while_the_registry_is_down(server_workdir):
    """With the registry unreachable the server answers /healthz within seconds (MLflow's own
    retries alone held the start for minutes), /readyz says why, and the retries are logged."""
    env = {"CHURN_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
           "CHURN_MODEL_URI": "models:/churn-risk@champion", "CHURN_LOAD_ATTEMPTS": "2"}
    with start_server(uvicorn_factory_argv, env, server_workdir, timeout=30) as server:
        client = httpx.Client(base_url=server.url, headers={"Host": "localhost"})
        deadline = time.monotonic() + 60
        while "giving up" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == UNREACHABLE
        assert client.get("/v1/model").json()["detail"].endswith(UNREACHABLE)
        log = server.output()
        assert "attempt 1 of 2" in log and "retrying the model load" in log
        assert "giving up loading the model after 2 attempt(s)" in log


def test_a_cut_champion_at_start_leaves_two_workers_up_and_unready(tiny_model_dir, tmp_path,
                                                                    server_workdir):
    cut = tmp_path / "cut"
    (cut / "artifacts").mkdir(parents=True)
    for name in ("booster.txt", "metadata.json"):
        (cut / "artifacts" / name).write_bytes((tiny_model_dir / "artifacts" / name).read_bytes())
    text = (cut / "artifacts" / "booster.txt").read_text()
    (cut / "artifacts" / "booster.txt").write_text(text[: len(text) // 2])
    registry = register_model_dir(cut, tmp_path)
    env = {"CHURN_TRACKING_URI": registry.tracking_uri, "CHURN_WORKERS": "2",
           "CHURN_POLL_SECONDS": "0"}
    with start_server(serve_argv, env, server_workdir) as server:
        with httpx.Client(base_url=server.url, headers={"Host": "localhost"}) as client:
            assert wait_for_model(client)["reason"] == UNREADABLE
            time.sleep(2)  # a crash loop would show by now
            for _ in range(8):  # whichever worker answers
                r = client.get("/readyz")
                assert r.status_code == 503 and r.json()["reason"] == UNREADABLE
        assert server.process.poll() is None
        assert "worker exited" not in server.output()


def _external_address() -> str | None:
    """An address of this machine other machines could reach, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_uvicorn_on_every_interface_refuses_keyless_v1_from_other_machines(local_registry,
                                                                           server_workdir):
    address = _external_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")

    def argv(port: int) -> list[str]:  # as the docs show it, by hand, on 0.0.0.0
        return [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory",
                "--host", "0.0.0.0", "--port", str(port), "--log-level", "warning"]

    env = {"CHURN_TRACKING_URI": local_registry.tracking_uri, "CHURN_POLL_SECONDS": "0"}
    with start_server(argv, env, server_workdir, ready=True) as server:
        port = server.url.rsplit(":", 1)[1]
        body = {"accounts": [{"account_id": "A1", "features": {"active_days_30d": 3}}]}
        remote = httpx.post(f"http://{address}:{port}/v1/scores", json=body,
                            headers={"Host": "localhost"})
        assert remote.status_code == 403, remote.text
        local = httpx.post(f"{server.url}/v1/scores", json=body)
        assert local.status_code == 200

