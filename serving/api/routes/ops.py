"""``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics`` (Prometheus); no API key.

``/readyz`` says only public reasons: never a host, path, URL or driver message (the log has
them)."""

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from serving.api.deps import MetricsDep
from serving.observability import log
from serving.store import ScoreStore, StoreError

router = APIRouter(tags=["ops"])

#: The public reason when the score store cannot be read (GET /v1/accounts, /v1/portfolio fail).
STORE_DOWN = "the score store is unavailable"


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(m: MetricsDep) -> Response:
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", summary="Liveness: 200 while the process runs")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _store_state(store: ScoreStore | None) -> str:
    if store is None:
        return "unavailable"
    try:
        store.ping()
    except StoreError as exc:
        log.warning("score store: %s", exc, extra={"event": "store_unavailable"})
        return "unavailable"
    return "ok"


@router.get("/readyz", summary="Readiness: 200 once a model is loaded; the score store's state",
            responses={503: {"description": "No model is loaded; 'reason' says why"}})
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    store = await run_in_threadpool(_store_state, getattr(state, "store", None))
    model = getattr(state, "model", None)
    if model is None:
        reason = getattr(state, "model_error", None) or "no model loaded"
        return JSONResponse({"status": "unavailable", "reason": reason, "store": store},
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    body = {"status": "ready", "model_name": model.name, "model_version": model.version,
            "store": store}
    reasons = []
    warning = getattr(state, "reload_error", None)
    if warning:  # still serving the last good model
        reasons.append(f"serving the last good model: {warning}")
    if store != "ok":  # scores are served; stored history is not
        reasons.append(STORE_DOWN)
    if reasons:
        body.update(status="degraded", reason="; ".join(reasons))
    return JSONResponse(body)
