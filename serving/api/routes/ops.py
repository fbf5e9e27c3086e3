"""``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics`` (Prometheus); no API key."""

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serving.api.deps import MetricsDep

router = APIRouter(tags=["ops"])


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(m: MetricsDep) -> Response:
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", summary="Liveness: 200 while the process runs")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: 200 once a model is loaded",
            responses={503: {"description": "No model is loaded; 'reason' says why"}})
async def readyz(request: Request) -> JSONResponse:
    model = getattr(request.app.state, "model", None)
    if model is None:
        reason = getattr(request.app.state, "model_error", None) or "no model loaded"
        return JSONResponse({"status": "unavailable", "reason": reason},
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    body = {"status": "ready", "model_name": model.name, "model_version": model.version}
    warning = getattr(request.app.state, "reload_error", None)
    if warning:
        # Still serving the last good model: ready, but say what is wrong.
        body.update(status="degraded", reason=f"serving the last good model: {warning}")
    return JSONResponse(body)
