"""The API's routers assembled: operations at the root, everything else (the routers under
``/v1``) behind the API key when keys are configured, and the CS console's pages under ``/ui``
(behind a console session when keys are configured)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from serving.api.routes import history, model, ops, pages, scores, worklist
from serving.auth import require_api_key
from serving.schemas import Problem, score_columns_model, score_request_model

v1 = APIRouter(dependencies=[Depends(require_api_key)],
               responses={401: {"model": Problem, "description": "No valid API key"},
                          403: {"model": Problem, "description": "No API keys are configured "
                                "and the request comes from another machine"}})
v1.include_router(scores.router)
v1.include_router(model.router)
v1.include_router(worklist.router)
v1.include_router(history.router)

api_router = APIRouter()
api_router.include_router(ops.router)
api_router.include_router(v1)
api_router.include_router(pages.router)


def document_request_bodies(app: FastAPI, max_batch_size: int) -> None:
    """Put the ``POST /v1/scores`` and ``/v1/scores/columns`` body schemas into the OpenAPI
    components (the routes read the raw body themselves, so FastAPI does not see the models)."""
    request_models = {"ScoreRequest": score_request_model(max_batch_size),
                      "ScoreColumnsRequest": score_columns_model(max_batch_size)}
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, request_model in request_models.items():
            schema = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[name] = schema
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
