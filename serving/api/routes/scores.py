"""``POST /v1/scores`` and ``POST /v1/scores/columns``: churn probability, reasons and health.

The body is parsed by pydantic-core straight from the bytes (JSON parsing and validation in one
pass) against the served model's request schema, which carries the batch limit and the features
the model declares; the schemas are still documented (``serving.api.main`` adds them to the
OpenAPI components).
"""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from serving.api.deps import V1, ModelDep, ServiceDep
from serving.schemas import Problem, ScoreResponse
from serving.scoring import AccountColumns

router = APIRouter(prefix=V1, tags=["scores"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "Too many accounts in one request"},
    415: {"model": Problem, "description": "The body is not sent as application/json"},
    503: {"model": Problem, "description": "No model is loaded (see /readyz), or the "
          "worker's queue of big requests is full (retry after Retry-After seconds)"}}
ExplainParam = Annotated[bool, Query(description="Return the top reasons of each score")]
ReasonsParam = Annotated[int | None, Query(
    ge=1, le=1000, description="How many reasons per account [default: configured]")]


def body_schema(component: str) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its raw body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{component}"}}}}}


async def json_body(request: Request) -> bytes:
    """The raw body of a request that says it is JSON; 415 for any other content type (a
    ``text/plain`` body is what a browser form may send cross-site without a preflight)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            detail="Send the body as JSON (Content-Type: application/json).")
    return await request.body()


def validated(schema: type[BaseModel], raw: bytes) -> Any:
    """``raw`` parsed and validated by ``schema``; errors as FastAPI's 422 (``loc`` in the body)."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        ) from None


def _accounts_without_features(values: dict[str, list[Any]], n: int) -> list[int]:
    """The positions of the accounts with no value in any column (cheap when a column is full)."""
    if any(None not in column for column in values.values()):
        return []
    return [i for i in range(n) if all(column[i] is None for column in values.values())]


@router.post("/scores", response_model=ScoreResponse, responses=RESPONSES,
             summary="Churn probability, reasons and health score of up to max_batch_size accounts",
             openapi_extra=body_schema("ScoreRequest"))
async def post_scores(request: Request, model: ModelDep, service: ServiceDep,
                      explain: ExplainParam = True, reasons: ReasonsParam = None) -> ScoreResponse:
    schema, _ = model.request_models(service.settings.max_batch_size)
    body = validated(schema, await json_body(request))
    accounts = [(a.account_id, a.features.__dict__) for a in body.accounts]
    return await service.respond(model, accounts, explain, reasons)  # type: ignore[return-value]


@router.post("/scores/columns", response_model=ScoreResponse, responses=RESPONSES,
             summary="The same scores for accounts sent column by column (cheaper for big "
                     "batches)", openapi_extra=body_schema("ScoreColumnsRequest"))
async def post_score_columns(request: Request, model: ModelDep, service: ServiceDep,
                             explain: ExplainParam = True, reasons: ReasonsParam = None
                             ) -> ScoreResponse:
    _, schema = model.request_models(service.settings.max_batch_size)
    body = validated(schema, await json_body(request))
    n = len(body.account_id)
    values = {name: column for name, column in body.features.__dict__.items()
              if column is not None}
    uneven = [{"loc": ("body", "features", name), "type": "column_length",
               "msg": f"Feature '{name}' has {len(column)} values for {n} account_id(s); "
                      "send one value (or null) per account"}
              for name, column in values.items() if len(column) != n]
    if uneven:
        raise RequestValidationError(uneven)
    empty = _accounts_without_features(values, n)
    if empty:
        raise RequestValidationError([
            {"loc": ("body", "account_id", i), "type": "no_known_feature",
             "msg": "The account has no value for any feature the model takes (GET /v1/model "
                    "lists them)"} for i in empty])
    return await service.respond(model, AccountColumns(body.account_id, values), explain,
                                 reasons)  # type: ignore[return-value]
