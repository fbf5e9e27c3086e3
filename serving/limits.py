"""Connection limits of the HTTP server: header size, slow requests, idle and too many
connections.

uvicorn's httptools protocol (the fast parser this package installs) has no limit on the size of
a request's headers and no timeout on a request that is being sent: a client could send a 50 MB
header, or open thousands of connections and send nothing, until the process ran out of memory or
file descriptors and ``/healthz`` failed. :func:`bounded_protocol` makes a subclass of it that

* answers 431 and closes the connection once a request line + headers pass ``max_header_bytes``;
* answers 408 and closes a connection whose request headers have not all arrived
  ``header_timeout_seconds`` after its first byte (or after the connection opened), or whose
  body has not all arrived ``body_timeout_seconds`` after its headers;
* answers 503 and closes a new connection beyond ``max_connections`` open ones (per worker).

Idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``
(``keep_alive_seconds``). :func:`uvicorn_options` gives ``uvicorn.run``/``uvicorn.Config`` all of
them; ``churn serve`` uses it for one worker and for each of several workers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.settings import ServingSettings


def _raw_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring (class attributes,
    set by :func:`bounded_protocol`)."""

    max_header_bytes = 32_768
    header_timeout = 10.0
    body_timeout = 30.0
    max_connections = 1000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._in_head = True
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self._refuse(503, "Service Unavailable", "Too many open connections; retry later.")
            return
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _refuse(self, status: int, reason: str, text: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, reason, text))
            self.transport.close()

    def _timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self._in_head or cycle is None or not cycle.response_started:
            self._refuse(408, "Request Timeout", "The request was not sent in time.")
        elif not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._refuse(431, "Request Header Fields Too Large",
                         f"The request line and headers exceed {self.max_header_bytes} bytes.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()


def bounded_protocol(settings: ServingSettings) -> type[BoundedHttpToolsProtocol]:
    """A :class:`BoundedHttpToolsProtocol` with the limits of ``settings``."""
    return type("BoundedHttpTools", (BoundedHttpToolsProtocol,), {
        "max_header_bytes": settings.max_header_bytes,
        "header_timeout": settings.header_timeout_seconds,
        "body_timeout": settings.body_timeout_seconds,
        "max_connections": settings.max_connections})


def uvicorn_options(settings: ServingSettings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run``/``uvicorn.Config`` that bound connections."""
    return {"http": bounded_protocol(settings), "timeout_keep_alive": settings.keep_alive_seconds}
