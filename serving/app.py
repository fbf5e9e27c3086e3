"""The scoring API: ``create_app`` (the FastAPI factory) and ``serve`` (run it with uvicorn).

The model is loaded once, in the app's lifespan, into ``app.state.model``. If loading fails the
app still starts: ``/healthz`` answers 200, ``/readyz`` answers 503 with the reason and every
``/v1/*`` route answers 503, so an orchestrator keeps the instance out of rotation and the reason
is one ``curl`` away.

Run it with ``churn serve``, or with uvicorn directly::

    CHURN_MODEL_URI=models:/churn-risk@champion uvicorn serving.app:create_app --factory
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving.loader import ModelLoadError, load_model, redact
from serving.routes import build_router
from serving.settings import ServingSettings, get_settings

#: uvicorn configures this logger, so load results show in the `churn serve` output.
log = logging.getLogger("uvicorn.error")

#: At most this many validation errors are returned (a bad 1000-account batch could have 30k).
MAX_REPORTED_ERRORS = 20


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
        if error.get("type") == "too_long" and tuple(error.get("loc", ())) == ("body", "accounts"):
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


def _load(app: FastAPI, settings: ServingSettings) -> None:
    app.state.model = None
    app.state.model_error = None
    try:
        model = load_model(settings.model_uri, settings.tracking_uri)
        app.state.model = model
        log.info("serving %s version %s (%s)", model.name, model.version or "-",
                 redact(settings.model_uri))
    except ModelLoadError as exc:
        app.state.model_error = str(exc)
        log.error("no model loaded: %s", exc)
    except Exception as exc:  # noqa: BLE001 -- any failure must leave a running, unready app
        app.state.model_error = (f"Loading {redact(settings.model_uri)} failed: "
                                 f"{type(exc).__name__}: {exc}")
        log.exception("no model loaded: loading %s failed", redact(settings.model_uri))


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The API, configured by ``settings`` (default: :func:`get_settings`, i.e. ``CHURN_*``)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_load, app, settings)
        yield

    app = FastAPI(
        title="churn-risk",
        summary="Churn probability and customer health score of customer accounts",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.model = None
    app.state.model_error = "the model is still loading"
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.include_router(build_router(settings))
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
    """Run the API with uvicorn (blocks until the server stops). Used by ``churn serve``."""
    import uvicorn

    settings = settings or get_settings()
    if settings.workers > 1:
        # Several workers need an import string; each worker rebuilds the settings from the env.
        _export_env(settings)
        uvicorn.run("serving.app:create_app", factory=True, host=settings.host,
                    port=settings.port, workers=settings.workers,
                    log_level=settings.log_level.lower())
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level=settings.log_level.lower())
