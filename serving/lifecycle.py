"""The served model's lifecycle: loaded in the background at start, hot-swapped when its alias
moves.

The server listens at once: the app's lifespan only starts :func:`load_in_background`, so
``/healthz`` answers 200 while the model loads (an orchestrator's liveness probe never kills a
server that waits on its registry). Until a model is loaded ``/readyz`` and every ``/v1/*`` route
answer 503 with a short public reason (:data:`LOADING`, or why loading failed); the full reason,
redacted, is in the log. A load that fails because the registry could not be reached is tried
again, ``load_attempts`` times in all, waiting 1, 2, 4 ... seconds (at most
:data:`MAX_RETRY_SECONDS`) in between, each failure logged; a model that is missing, tampered
with or unreadable is not retried.

With a moving model URI (``models:/<name>@<alias>``, ``.../latest``) a background task checks the
alias every ``poll_seconds``, and loads the model if none is loaded yet. A new version is loaded
and smoke-tested off the event loop, then swapped in with one reference assignment (a request uses
the old or the new model, never a mix). If the registry is unreachable or the new version fails
to load or to predict, the last good model keeps serving, ``/readyz`` says ``degraded`` with the
public reason, and the log says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from features.redaction import redact
from serving.loader import current_version, load_model
from serving.model import UNUSABLE, LoadedModel, ModelLoadError
from serving.observability import log
from serving.settings import ServingSettings

#: What /readyz and a 503 say while the first load runs.
LOADING = "the model is still loading"
#: The longest wait between two load attempts.
MAX_RETRY_SECONDS = 30.0


@contextlib.contextmanager
def bounded_registry_client(settings: ServingSettings) -> Iterator[None]:
    """Bound the MLflow client's own retries and timeout while the block runs
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``; left alone when set in
    the environment): with MLflow's defaults an unreachable registry holds one call for minutes;
    :func:`load_in_background` does the retrying, logged. Restored afterwards, so that nothing
    else in the process (a test suite, a notebook) inherits them."""
    bounds = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.registry_retries),
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(settings.registry_timeout_seconds)))}
    added = [name for name in bounds if name not in os.environ]
    for name in added:
        os.environ[name] = bounds[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _load(settings: ServingSettings) -> LoadedModel:
    with bounded_registry_client(settings):
        return load_model(settings.model_uri, settings.tracking_uri, settings.treeshap)


def set_model(app: FastAPI, model: LoadedModel) -> None:
    app.state.model = model  # one reference assignment: requests see the old or the new model
    app.state.model_error = None
    app.state.reload_error = None
    app.state.metrics.set_model(model.name, model.version, model.alias)


def _as_load_error(exc: Exception, settings: ServingSettings) -> ModelLoadError:
    """Any failure of a load as a :class:`ModelLoadError` (redacted; unknown ones retried)."""
    if isinstance(exc, ModelLoadError):
        return exc
    return ModelLoadError(f"Loading {settings.model_uri} failed: {type(exc).__name__}: {exc}",
                          public=UNUSABLE, transient=True)


def try_load(app: FastAPI, settings: ServingSettings, attempt: int = 1) -> ModelLoadError | None:
    """One attempt to load the configured model; None once it serves, else the error."""
    try:
        model = _load(settings)
    except Exception as exc:  # noqa: BLE001 -- any failure must leave a running, unready app
        error = _as_load_error(exc, settings)
        app.state.model_error = error.public
        log.error("no model loaded (attempt %d of %d): %s", attempt, settings.load_attempts,
                  error, extra={"event": "model_load_failed", "attempt": attempt})
        return error
    set_model(app, model)
    log.info("serving %s version %s (%s)", model.name, model.version or "-",
             redact(settings.model_uri), extra={"event": "model_loaded",
                                                "model_version": model.version})
    return None


async def load_in_background(app: FastAPI, settings: ServingSettings,
                             on_loaded: Callable[[], None] | None = None) -> None:
    """Load the model, retrying registry failures with exponential back-off (bounded)."""
    delay = 1.0
    for attempt in range(1, settings.load_attempts + 1):
        error = await run_in_threadpool(try_load, app, settings, attempt)
        if error is None:
            if on_loaded is not None:
                on_loaded()
            return
        if not error.transient or attempt == settings.load_attempts:
            log.error("giving up loading the model after %d attempt(s)%s", attempt,
                      "; the alias check keeps trying" if settings.poll_seconds > 0 else "",
                      extra={"event": "model_load_gave_up"})
            return
        log.warning("retrying the model load in %g s", delay,
                    extra={"event": "model_load_retry", "attempt": attempt})
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)


def check_for_new_model(app: FastAPI, settings: ServingSettings) -> str:
    """One poll of the model alias. Swaps to a new version only once it loaded and passed the
    smoke prediction; otherwise keeps the last good model and records why (``/readyz``).

    Returns what happened: ``unchanged``, ``swapped``, ``loaded``, ``registry_error`` or
    ``load_error``.
    """
    current: LoadedModel | None = app.state.model
    metrics = app.state.metrics
    try:
        with bounded_registry_client(settings):
            version = current_version(settings.model_uri, settings.tracking_uri)
    except ModelLoadError as exc:
        metrics.reloads.labels("registry_error").inc()
        if current is None:
            app.state.model_error = exc.public
        else:
            app.state.reload_error = exc.public
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
        model = _load(settings)
    except Exception as exc:  # noqa: BLE001 -- a bad new version must never take the old one down
        error = _as_load_error(exc, settings)
        metrics.reloads.labels("load_error").inc()
        if current is None:
            app.state.model_error = error.public
        else:
            app.state.reload_error = f"version {version} could not be served: {error.public}"
        log.error("model reload failed, %s: version %s could not be served: %s",
                  "still serving version " + str(current.version) if current else "no model",
                  version, error, extra={"event": "model_reload_failed"})
        return "load_error"
    previous = current.version if current else None
    set_model(app, model)
    metrics.reloads.labels("swapped").inc()
    log.info("now serving %s version %s (was %s)", model.name, model.version, previous or "none",
             extra={"event": "model_swapped", "model_version": model.version,
                    "previous_version": previous})
    return "swapped" if current else "loaded"


async def poll(app: FastAPI, settings: ServingSettings,
               first_load: asyncio.Task[None] | None = None) -> None:
    if first_load is not None:
        await asyncio.wait([first_load])  # never two loads at once
    while True:
        await asyncio.sleep(settings.poll_seconds)
        try:
            await run_in_threadpool(check_for_new_model, app, settings)
        except Exception:  # noqa: BLE001 -- the poller must survive anything
            log.exception("model check crashed", extra={"event": "model_check_failed"})
