"""The API's error answers: a short public reason and the request id, never a host, path, URL
or driver message (those go to the log, redacted).

422 names each bad field (413 for an oversized batch), a 500 says nothing but where to look (the
request id), and a client that went away before its body was read is logged as such and counted
under status 499 (nginx's "client closed request"), not as a server error.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from serving.observability import log, request_id_var

#: The status logged and counted for a client that closed the connection mid-request.
CLIENT_CLOSED = 499

#: At most this many validation errors are returned (a bad 1000-account batch could have 30k).
MAX_REPORTED_ERRORS = 20


def problem(status_code: int, detail: Any, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    """An error answer: ``detail`` (public text only) and the request id of the log lines."""
    body: dict[str, Any] = {"detail": detail, **extra}
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    return JSONResponse(body, status_code=status_code, headers=headers)


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return problem(exc.status_code, exc.detail, exc.headers)


async def client_disconnected(request: Request, exc: ClientDisconnect) -> Response:
    log.info("the client closed the connection before its request was read",
             extra={"event": "client_disconnected"})
    return Response(status_code=CLIENT_CLOSED)


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
        if kind == "greater_than_equal":
            return (f"Feature '{feature}' must be at least {error['ctx']['ge']:g} (values below "
                    "cannot be true)")
        if kind == "less_than_equal":
            return (f"Feature '{feature}' must be at most {error['ctx']['le']:g} (values above "
                    "cannot be true)")
    if kind == "missing" and loc[-1:] == ("features",):
        return "The account's features are missing: send at least one feature the model takes"
    if kind == "extra_forbidden" and loc:
        return f"Unknown field '{loc[-1]}'"
    return str(error.get("msg", "Invalid value"))


def _batch_too_large(errors: list[dict[str, Any]]) -> dict[str, Any] | None:
    for error in errors:
        if error.get("type") == "too_long" and tuple(error.get("loc", ())) in (
                ("body", "accounts"), ("body", "account_id")):
            return error
    return None


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the payload; 413 for an oversized batch."""
    errors = list(exc.errors())
    too_long = _batch_too_large(errors)
    if too_long is not None:
        ctx = too_long.get("ctx") or {}
        return problem(status.HTTP_413_CONTENT_TOO_LARGE,
                       f"Too many accounts in one request: {ctx.get('actual_length', '?')} "
                       f"(limit {ctx.get('max_length', '?')}); split the batch.")
    shown = [{"loc": list(e.get("loc", ())), "field": _location(tuple(e.get("loc", ()))),
              "msg": _message(e), "type": e.get("type", "")}
             for e in errors[:MAX_REPORTED_ERRORS]]
    return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, shown, error_count=len(errors))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc,
              extra={"event": "internal_error"})
    return problem(500, "Internal error; the request id is in the x-request-id header and the "
                        "server log.")
