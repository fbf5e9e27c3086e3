"""The scoring API: ``create_app`` (the FastAPI factory) and ``serve`` (run it with uvicorn).

The model is loaded once, in the app's lifespan, into ``app.state.model``. If loading fails the
app still starts: ``/healthz`` answers 200, ``/readyz`` answers 503 with the reason and every
``/v1/*`` route answers 503, so an orchestrator keeps the instance out of rotation and the reason
is one ``curl`` away.

With a moving model URI (``models:/<name>@<alias>``, ``.../latest``) a background task checks the
alias every ``poll_seconds``. A new version is loaded and smoke-tested off the event loop, then
swapped in with one reference assignment (a request uses the old or the new model, never a mix).
If the registry is unreachable or the new version fails to load or to predict, the last good model
keeps serving, ``/readyz`` says ``degraded`` with the reason, and the log says so.

Run it with ``churn serve``, or with uvicorn directly::

    CHURN_MODEL_URI=models:/churn-risk@champion uvicorn serving.app:create_app --factory
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving.loader import (
    LoadedModel,
    ModelLoadError,
    alias_target,
    current_version,
    load_model,
    redact,
)
from serving.observability import Metrics, RequestMiddleware, configure_logging
from serving.observability import log as log
from serving.routes import build_router
from serving.schemas import score_columns_model, score_request_model
from serving.settings import ServingSettings, get_settings
from serving.store import ScoreStore

#: At most this many validation errors are returned (a bad 1000-account batch could have 30k).
MAX_REPORTED_ERRORS = 20
#: Net allocations of container objects between two young-generation collections of the cyclic
#: GC once the model is loaded (CPython's default is 700); see :func:`settle_gc`.
GC_YOUNG_THRESHOLD = 20_000


def _location(loc: tuple[Any, ...]) -> str:
    """``("body", "accounts", 0, "features", "plan")`` -> ``accounts[0].features.plan``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _message(error: dict[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    feature = loc[-1] if len(loc) >= 2 and loc[-2] == "features" else None
    if feature is not None:
        if kind == "extra_forbidden":
            return (f"Unknown feature '{feature}' (GET /v1/model lists the features this "
                    "model takes)")
        if kind == "finite_number":
            return f"Feature '{feature}' must be a finite number (NaN and infinity are not allowed)"
        if kind in ("float_type", "float_parsing"):
            return f"Feature '{feature}' must be a number or null"
        if kind == "string_type":
            return f"Feature '{feature}' is categorical and must be a string or null"
    if kind == "extra_forbidden" and loc:
        return f"Unknown field '{loc[-1]}'"
    return str(error.get("msg", "Invalid value"))


def _batch_too_large(errors: list[dict[str, Any]]) -> dict[str, Any] | None:
    for error in errors:
        if error.get("type") == "too_long" and tuple(error.get("loc", ())) in (
                ("body", "accounts"), ("body", "account_id")):
            return error
    return None


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the payload; 413 for an oversized batch."""
    errors = list(exc.errors())
    too_long = _batch_too_large(errors)
    if too_long is not None:
        ctx = too_long.get("ctx") or {}
        return JSONResponse(
            {"detail": f"Too many accounts in one request: {ctx.get('actual_length', '?')} "
                       f"(limit {ctx.get('max_length', '?')}); split the batch."},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE)
    shown = [{"loc": list(e.get("loc", ())), "field": _location(tuple(e.get("loc", ()))),
              "msg": _message(e), "type": e.get("type", "")}
             for e in errors[:MAX_REPORTED_ERRORS]]
    return JSONResponse({"detail": shown, "error_count": len(errors)},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _set_model(app: FastAPI, model: LoadedModel) -> None:
    app.state.model = model  # one reference assignment: requests see the old or the new model
    app.state.model_error = None
    app.state.reload_error = None
    app.state.metrics.set_model(model.name, model.version, model.alias)


def _load(app: FastAPI, settings: ServingSettings) -> None:
    app.state.model = None
    app.state.model_error = None
    app.state.reload_error = None
    try:
        model = load_model(settings.model_uri, settings.tracking_uri, settings.treeshap)
        _set_model(app, model)
        log.info("serving %s version %s (%s)", model.name, model.version or "-",
                 redact(settings.model_uri), extra={"event": "model_loaded",
                                                    "model_version": model.version})
    except ModelLoadError as exc:
        app.state.model_error = str(exc)
        log.error("no model loaded: %s", exc, extra={"event": "model_load_failed"})
    except Exception as exc:  # noqa: BLE001 -- any failure must leave a running, unready app
        app.state.model_error = (f"Loading {redact(settings.model_uri)} failed: "
                                 f"{type(exc).__name__}: {exc}")
        log.exception("no model loaded: loading %s failed", redact(settings.model_uri),
                      extra={"event": "model_load_failed"})


def check_for_new_model(app: FastAPI, settings: ServingSettings) -> str:
    """One poll of the model alias. Swaps to a new version only once it loaded and passed the
    smoke prediction; otherwise keeps the last good model and records why (``/readyz``).

    Returns what happened: ``unchanged``, ``swapped``, ``loaded``, ``registry_error`` or
    ``load_error``.
    """
    current: LoadedModel | None = app.state.model
    metrics = app.state.metrics
    try:
        version = current_version(settings.model_uri, settings.tracking_uri)
    except ModelLoadError as exc:
        metrics.reloads.labels("registry_error").inc()
        if current is None:
            app.state.model_error = str(exc)
        else:
            app.state.reload_error = str(exc)
        log.error("model check failed, %s: %s",
                  "still serving version " + str(current.version) if current else "no model",
                  exc, extra={"event": "model_check_failed"})
        return "registry_error"
    if current is not None and (version is None or version == current.version):
        if app.state.reload_error:
            log.info("registry reachable again; serving version %s", current.version,
                     extra={"event": "model_check_recovered"})
        app.state.reload_error = None
        return "unchanged"
    try:
        model = load_model(settings.model_uri, settings.tracking_uri, settings.treeshap)
    except Exception as exc:  # noqa: BLE001 -- a bad new version must never take the old one down
        metrics.reloads.labels("load_error").inc()
        reason = f"version {version} could not be served: {exc}"
        if current is None:
            app.state.model_error = reason
        else:
            app.state.reload_error = reason
        log.error("model reload failed, %s: %s",
                  "still serving version " + str(current.version) if current else "no model",
                  reason, extra={"event": "model_reload_failed"})
        return "load_error"
    previous = current.version if current else None
    _set_model(app, model)
    metrics.reloads.labels("swapped").inc()
    log.info("now serving %s version %s (was %s)", model.name, model.version, previous or "none",
             extra={"event": "model_swapped", "model_version": model.version,
                    "previous_version": previous})
    return "swapped" if current else "loaded"


async def _poll(app: FastAPI, settings: ServingSettings) -> None:
    while True:
        await asyncio.sleep(settings.poll_seconds)
        try:
            await run_in_threadpool(check_for_new_model, app, settings)
        except Exception:  # noqa: BLE001 -- the poller must survive anything
            log.exception("model check crashed", extra={"event": "model_check_failed"})


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc,
              extra={"event": "internal_error"})
    return JSONResponse({"detail": "Internal error; the request id is in the x-request-id "
                                   "header and the server log."}, status_code=500)


def _document_request_body(app: FastAPI, request_models: dict[str, type]) -> None:
    """Put the ``POST /v1/scores`` and ``/v1/scores/columns`` body schemas into the OpenAPI
    components (the routes read the raw body themselves, so FastAPI does not see the models)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, model in request_models.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[name] = schema
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def settle_gc() -> None:
    """Tune the cyclic garbage collector for serving, once the model is loaded.

    * What is loaded by now (modules, the model, MLflow's objects) lives as long as the process:
      ``gc.freeze()`` keeps full collections from rescanning it on every request.
    * A request of 1,000 accounts holds over 10,000 container objects (the validated request,
      the scores), and a worker has several such requests in flight. With CPython's default
      young-generation threshold of 700 that set off about 17 young and 2 older collections per
      request, each walking the other requests' live objects: about 18 % of a worker's CPU on
      batches in a profile. The objects are freed by reference counting when the request ends
      and are rarely in cycles, so collecting every :data:`GC_YOUNG_THRESHOLD` net allocations
      costs little memory.
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
        await run_in_threadpool(_load, app, settings)
        settle_gc()
        poller = None
        if settings.poll_seconds > 0 and alias_target(settings.model_uri) is not None:
            poller = asyncio.create_task(_poll(app, settings))
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            app.state.store.engine.dispose()

    app = FastAPI(
        title="churn-risk",
        summary="Churn probability, reasons and customer health score of customer accounts",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.model = None
    app.state.model_error = "the model is still loading"
    app.state.reload_error = None
    app.state.metrics = Metrics()
    app.state.store = ScoreStore(settings.score_store_url)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(build_router(settings, app.state.metrics))
    _document_request_body(app, {
        "ScoreRequest": score_request_model(settings.max_batch_size),
        "ScoreColumnsRequest": score_columns_model(settings.max_batch_size)})
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type",
                                          "X-Request-ID"],
                           expose_headers=["X-Request-ID"])
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

    from serving.workers import claim_port, run_workers

    settings = settings or get_settings()
    settings.check_exposure()  # ValueError: /v1/* would be open to the network without keys
    # Taken before anything loads: a second server refused now, not after its model load.
    with claim_port(settings.host, settings.port):
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
                        log_level=settings.log_level.lower())
        else:
            uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                        log_level=settings.log_level.lower())
