"""The served model's lifecycle: loaded at start, hot-swapped when its alias moves.

The model is loaded once, in the app's lifespan, into ``app.state.model``. If loading fails the
app still starts: ``/healthz`` answers 200, ``/readyz`` answers 503 with the reason and every
``/v1/*`` route answers 503, so an orchestrator keeps the instance out of rotation and the reason
is one ``curl`` away.

With a moving model URI (``models:/<name>@<alias>``, ``.../latest``) a background task checks the
alias every ``poll_seconds``. A new version is loaded and smoke-tested off the event loop, then
swapped in with one reference assignment (a request uses the old or the new model, never a mix).
If the registry is unreachable or the new version fails to load or to predict, the last good model
keeps serving, ``/readyz`` says ``degraded`` with the reason, and the log says so.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from features.redaction import redact
from serving.loader import current_version, load_model
from serving.model import LoadedModel, ModelLoadError
from serving.observability import log
from serving.settings import ServingSettings


def set_model(app: FastAPI, model: LoadedModel) -> None:
    app.state.model = model  # one reference assignment: requests see the old or the new model
    app.state.model_error = None
    app.state.reload_error = None
    app.state.metrics.set_model(model.name, model.version, model.alias)


def load_at_start(app: FastAPI, settings: ServingSettings) -> None:
    app.state.model = None
    app.state.model_error = None
    app.state.reload_error = None
    try:
        model = load_model(settings.model_uri, settings.tracking_uri, settings.treeshap)
        set_model(app, model)
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
    set_model(app, model)
    metrics.reloads.labels("swapped").inc()
    log.info("now serving %s version %s (was %s)", model.name, model.version, previous or "none",
             extra={"event": "model_swapped", "model_version": model.version,
                    "previous_version": previous})
    return "swapped" if current else "loaded"


async def poll(app: FastAPI, settings: ServingSettings) -> None:
    while True:
        await asyncio.sleep(settings.poll_seconds)
        try:
            await run_in_threadpool(check_for_new_model, app, settings)
        except Exception:  # noqa: BLE001 -- the poller must survive anything
            log.exception("model check crashed", extra={"event": "model_check_failed"})
