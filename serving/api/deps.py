"""What the routes depend on, as typed dependencies read from the app's state.

``create_app`` puts the settings, metrics, score store and scoring service on ``app.state`` and
the lifecycle puts the served model there; tests swap any of them with
``app.dependency_overrides[get_model] = ...``, as in the FastAPI docs.

The dependencies are async although they do no I/O: FastAPI runs sync dependencies in the thread
pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from serving.model import LoadedModel
from serving.observability import Metrics, log
from serving.service import ScoringService
from serving.settings import ServingSettings
from serving.store import ScoreStore, StoreError

#: The prefix of the versioned API. Each router carries it itself: FastAPI keeps a route's own
#: path as its template (the metrics' route label), whatever prefix it is included under.
V1 = "/v1"
#: What a 503 says while no model is loaded, before the public reason (the full one is logged).
NO_MODEL = "No model is loaded: "
#: What a 503 says when the score store cannot be read (the driver's message is logged).
NO_STORE = ("The score store is unavailable: `churn score` creates it; if it ran, the server log "
            "says why it cannot be read.")


async def get_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


async def get_model(request: Request) -> LoadedModel:
    """The served model, or 503 with the reason it is not loaded."""
    model = getattr(request.app.state, "model", None)
    if model is None:
        reason = getattr(request.app.state, "model_error", None) or "no model loaded"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=NO_MODEL + reason)
    return model


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_store(request: Request) -> ScoreStore:
    """The score store, or 503 when it could not even be opened (a bad URL: logged at start)."""
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=NO_STORE)
    return store


def store_unavailable(exc: StoreError) -> str:
    """Log why the store cannot be read (redacted) and return what clients are told instead."""
    log.error("score store: %s", exc, extra={"event": "store_error"})
    return NO_STORE


def store_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, a store read: 503 with the public reason when it fails."""
    try:
        return fn(*args, **kwargs)
    except StoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=store_unavailable(exc)) from exc


async def get_service(request: Request) -> ScoringService:
    return request.app.state.service


SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[ScoreStore, Depends(get_store)]
ServiceDep = Annotated[ScoringService, Depends(get_service)]
