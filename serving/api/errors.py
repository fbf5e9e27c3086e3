"""The API's error answers: 422 naming each bad field (413 for an oversized batch) and a 500
that says nothing but where to look (the request id)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.observability import log

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
        return JSONResponse(
            {"detail": f"Too many accounts in one request: {ctx.get('actual_length', '?')} "
                       f"(limit {ctx.get('max_length', '?')}); split the batch."},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE)
    shown = [{"loc": list(e.get("loc", ())), "field": _location(tuple(e.get("loc", ()))),
              "msg": _message(e), "type": e.get("type", "")}
             for e in errors[:MAX_REPORTED_ERRORS]]
    return JSONResponse({"detail": shown, "error_count": len(errors)},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc,
              extra={"event": "internal_error"})
    return JSONResponse({"detail": "Internal error; the request id is in the x-request-id "
                                   "header and the server log."}, status_code=500)
