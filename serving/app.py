"""The scoring API: ``create_app`` (the FastAPI factory) and ``serve`` (run it with uvicorn).

The app's lifespan starts loading the model in the background and keeps it current
(:mod:`serving.lifecycle`); the routes live in :mod:`serving.api`. The app itself enforces what
must hold however it is started: the exposure rule of ``/v1/*`` (:func:`serving.settings.open_to`),
the ``Host`` allow-list, security headers, the docs' assets served from the package (no CDN), the
score store opened read-only. :func:`serve` adds the connection limits (:mod:`serving.limits`).

Run it with ``churn serve``, or with uvicorn directly (without the connection limits then)::

    CHURN_MODEL_URI=models:/churn-risk@champion uvicorn serving.app:create_app --factory
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from serving.api.docs import add_docs
from serving.api.errors import client_disconnected, http_error, internal_error, validation_error
from serving.api.main import api_router, document_request_bodies
from serving.lifecycle import LOADING, load_in_background, poll
from serving.loader import alias_target
from serving.observability import Metrics, RequestMiddleware, configure_logging, log
from serving.service import ScoringService
from serving.settings import ServingSettings, get_settings, host_allow_list
from serving.store import ScoreStore, StoreError

#: Net allocations of container objects between two young-generation collections of the cyclic
#: GC once the model is loaded (CPython's default is 700); see :func:`settle_gc`.
GC_YOUNG_THRESHOLD = 20_000


def settle_gc() -> None:
    """Tune the cyclic garbage collector for serving, once the model is loaded.

    * What is loaded by now (modules, the model, MLflow's objects) lives as long as the process:
      ``gc.freeze()`` keeps full collections from rescanning it on every request.
    * A request of 1,000 accounts holds over 10,000 container objects (the validated request,
      the scores), and a worker has several such requests in flight. With CPython's default
      young-generation threshold of 700 that sets off many young and older collections per
      request, each walking the other requests' live objects. The objects are freed by reference
      counting when the request ends and are rarely in cycles, so collecting every
      :data:`GC_YOUNG_THRESHOLD` net allocations costs little memory.
    """
    gc.freeze()
    young, *older = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:  # 0 = the GC was turned off on purpose: leave it off
        gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The API, configured by ``settings`` (default: :func:`get_settings`, i.e. ``CHURN_*``)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Listen at once; the model loads in the background (/readyz says when it is served).
        loader = asyncio.create_task(load_in_background(app, settings, on_loaded=settle_gc))
        tasks = [loader]
        if settings.load_before_listening:  # a restarted worker: its siblings serve meanwhile
            await asyncio.wait([loader])
        if settings.poll_seconds > 0 and alias_target(settings.model_uri) is not None:
            tasks.append(asyncio.create_task(poll(app, settings, first_load=loader)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if app.state.store is not None:
                app.state.store.engine.dispose()

    app = FastAPI(
        title="churn-risk",
        summary="Churn probability, reasons and customer health score of customer accounts",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served by serving.api.docs from the package's own assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.model = None
    app.state.model_error = LOADING
    app.state.reload_error = None
    app.state.metrics = Metrics()
    try:  # read-only: the API never creates or writes the store (`churn score` does)
        app.state.store = ScoreStore(settings.score_store_url, read_only=True)
    except StoreError as exc:
        app.state.store = None
        log.error("score store unusable: %s", exc, extra={"event": "store_error"})
    app.state.service = ScoringService(settings, app.state.metrics)
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, client_disconnected)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)
    app.include_router(api_router)
    add_docs(app)
    document_request_bodies(app, settings.max_batch_size)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type",
                                          "X-Request-ID"],
                           expose_headers=["X-Request-ID"])
    # Outermost after the request middleware: a request for another Host (DNS rebinding) is
    # refused before any route, and still gets a request id, security headers and a log line.
    hosts = host_allow_list(settings)
    if hosts != ["*"]:  # any Host: no layer to pass on every request
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics,
                       max_body_bytes=settings.max_body_bytes,
                       log_requests=settings.log_requests)
    if not settings.api_key_hashes:
        log.warning("no API keys configured (CHURN_API_KEY_HASHES): /v1/* is open to anyone "
                    "who can reach this port", extra={"event": "auth_disabled"})
    return app


def _export_env(settings: ServingSettings) -> None:
    """Put ``settings`` into ``CHURN_*`` variables, so worker processes rebuild the same."""
    for name, value in settings.model_dump().items():
        if value is None:
            os.environ.pop(f"CHURN_{name.upper()}", None)
            continue
        os.environ[f"CHURN_{name.upper()}"] = (json.dumps(value) if isinstance(value, dict | list)
                                               else str(value))


def serve(settings: ServingSettings | None = None) -> None:
    """Run the API with uvicorn (blocks until the server stops). Used by ``churn serve``.

    Raises ``ValueError`` before binding when :attr:`~ServingSettings.host` is reachable from
    other machines and no API keys are configured (see :meth:`ServingSettings.check_exposure`).
    """
    import uvicorn

    from serving.limits import uvicorn_options
    from serving.workers import claim_port, run_workers

    settings = settings or get_settings()
    settings.check_exposure()  # ValueError: /v1/* would be open to the network without keys
    # Taken before anything loads: a second server refused now, not after its model load.
    with claim_port(settings.host, settings.port):
        if settings.workers > 1 and not settings.console_secret:
            # One console secret for every worker: a session cookie holds wherever it lands.
            settings = settings.model_copy(update={"console_secret": secrets.token_urlsafe(32)})
        if settings.workers > 1 and sys.platform.startswith("linux"):
            # Each worker rebuilds the settings from the env and listens on its own
            # SO_REUSEPORT socket, so connections are spread over the workers (serving.workers).
            _export_env(settings)
            run_workers(settings.host, settings.port, settings.workers, settings.log_level.lower())
        elif settings.workers > 1:
            # Elsewhere SO_REUSEPORT does not balance connections: uvicorn's shared socket,
            # with its per-worker metrics (docs/serving.md).
            _export_env(settings)
            uvicorn.run("serving.app:create_app", factory=True, host=settings.host,
                        port=settings.port, workers=settings.workers,
                        log_level=settings.log_level.lower(),
                        # the bounded protocol class cannot be pickled for uvicorn's workers
                        timeout_keep_alive=settings.keep_alive_seconds)
        else:
            uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                        log_level=settings.log_level.lower(), **uvicorn_options(settings))
