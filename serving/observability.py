"""Request ids, structured JSON logs, Prometheus metrics and the request-body limit.

One pure-ASGI middleware (:class:`RequestMiddleware`) does the per-request work, cheaply:

* adds the security headers (:data:`SECURITY_HEADERS`) a response does not set itself;
* takes the caller's ``X-Request-ID`` (letters, digits, ``-_.:``, at most 64) or makes one, puts
  it in a context variable (every log line of the request carries it) and in the response header;
* refuses a body over ``max_body_bytes`` with 413, from ``Content-Length`` or while reading a
  chunked body, without reading more than the limit;
* times the request into ``churn_http_request_duration_seconds{route, method, status}`` (the
  route *template*, e.g. ``/v1/accounts/{account_id}``, so ids never become label values);
* writes one JSON log line per request: ``request_id``, method, route, status, duration. Never
  the headers (API keys), never the body (customer data).

Metrics live in a registry per app (``app.state.metrics``), served at ``GET /metrics``. With
several workers (:mod:`serving.workers`) the client library's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor): every worker writes its values to files in
that directory and a scrape, whichever worker answers it, returns the sum over all workers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.exceptions import HTTPException

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "churn_request_id", default=None)

#: The logger of the request log and of the serving modules' messages.
log = logging.getLogger("churn.serving")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the ``churn`` loggers (once per process)."""
    root = logging.getLogger("churn")
    if not any(getattr(h, "_churn_json", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler._churn_json = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level.upper())


class Metrics:
    """The Prometheus metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "churn_http_request_duration_seconds", "Request latency by route template",
            ["route", "method", "status"], registry=r,
            buckets=(.0005, .001, .002, .004, .006, .008, .01, .015, .025, .05, .1, .25, .5, 1,
                     2.5, 5, 10))
        self.probability = Histogram(
            "churn_score_churn_probability", "Churn probabilities served", registry=r,
            buckets=tuple(i / 20 for i in range(1, 21)))
        self.health = Histogram(
            "churn_score_health_score", "Health scores served (0-100)", registry=r,
            buckets=tuple(range(10, 101, 10)))
        self.accounts = Counter("churn_scored_accounts", "Accounts scored", registry=r)
        self.batch_requests = Histogram(
            "churn_scoring_batch_requests",
            "Requests scored together in one model call (micro-batching)", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64))
        # In multiprocess mode a gauge is combined over the live workers: "livemax" = 1 while
        # any worker serves that model.
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.model = Gauge("churn_model_info", "The served model (value 1)",
                           ["name", "version", "alias"], registry=r, multiprocess_mode="livemax")
        self.reloads = Counter("churn_model_reloads", "Model reload attempts by outcome",
                               ["outcome"], registry=r)
        self.model_age = Gauge("churn_model_loaded_timestamp_seconds",
                               "When the served model was loaded", registry=r,
                               multiprocess_mode="livemax")
        self._model_labels: tuple[str, str, str] | None = None

    def observe_scores(self, probabilities: Sequence[float], health: Sequence[float | None]
                       ) -> None:
        _observe_many(self.probability, probabilities)
        _observe_many(self.health, [h for h in health if h is not None])
        self.accounts.inc(len(probabilities))

    def set_model(self, name: str, version: str | None, alias: str | None) -> None:
        labels = (name, version or "", alias or "")
        if self._model_labels is not None and self._model_labels != labels:
            if self.multiprocess:  # label removal does not exist in multiprocess mode
                self.model.labels(*self._model_labels).set(0)
            else:
                self.model.remove(*self._model_labels)
        self.model.labels(*labels).set(1)
        self._model_labels = labels
        self.model_age.set(time.time())

    def exposition(self) -> bytes:
        """The text format for ``GET /metrics``: this app's registry, or with several workers the
        sum over every worker's files."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)


def _observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every value; for batches, one increment per bucket (the
    client library's own bucket and sum counters, which ``observe`` updates one by one)."""
    if len(values) < 16 or not hasattr(histogram, "_buckets"):
        for v in values:
            histogram.observe(v)
        return
    arr = np.asarray(values, dtype=np.float64)
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # observe() puts v in the first bucket whose upper bound is >= v
    counts = np.bincount(np.searchsorted(bounds, arr, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(arr.sum()))


class BodyTooLarge(HTTPException):
    """Raised while reading a body over the limit. An ``HTTPException`` so that FastAPI, which
    turns other errors raised while reading the body into 400, passes it on as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body larger than the limit of {limit} bytes; send fewer "
                              "accounts per request.")


def _problem(status: int, detail: str, rid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps({"detail": detail, "request_id": rid}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"x-request-id", rid.encode())]}
    return start, {"type": "http.response.body", "body": body}


#: Added to every response that does not set them itself (a page of its own may set its own
#: Content-Security-Policy). The policy lets a page of this origin use its own scripts, styles
#: and images (Swagger UI's inline start-up script among them) and nothing from elsewhere, and
#: no other site frame it. ``same-origin`` sends no referrer to other sites; ``no-referrer``
#: would also make a browser send ``Origin: null`` on the console's own form posts, which the
#: cross-site check must then refuse.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
     b"form-action 'self'"),
)


class RequestMiddleware:
    """Request id, body limit, latency metric and request log (see the module docstring)."""

    def __init__(self, app: Any, *, metrics: Metrics, max_body_bytes: int,
                 log_requests: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.log_requests = log_requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = ""
        length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                rid = text if _REQUEST_ID.match(text) else ""
            elif name == b"content-length":
                length = value
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        status = 500
        response_started = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in present]
                message["headers"] = [*headers, (b"x-request-id", rid.encode())]
            await send(message)

        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                raise BodyTooLarge(self.max_body)
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge as exc:
            if response_started:
                raise
            start, body = _problem(413, exc.detail, rid)
            await send_with_id(start)
            await send(body)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(template, scope["method"], str(status)).observe(elapsed)
            if self.log_requests:
                log.info("request", extra={"method": scope["method"], "route": template,
                                           "status": status,
                                           "duration_ms": round(elapsed * 1000, 3)})
            request_id_var.reset(token)
