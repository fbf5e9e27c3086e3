"""API keys: configured as SHA-256 digests, checked in constant time, required on ``/v1/*``.

A client sends ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The server only knows the
digests (``CHURN_API_KEY_HASHES``), hashes what it receives and compares it with every configured
digest using :func:`hmac.compare_digest`, so neither the comparison nor the number of configured
keys leaks through timing. Keys are never logged: the request log records method, route, status
and timing only.

Make a key and its digest with::

    python -m serving.auth new        # prints a fresh key and its digest
    python -m serving.auth hash KEY   # the digest of an existing key
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
from collections.abc import Sequence

from fastapi import HTTPException, Request, status

from serving.settings import open_to


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(presented: str | None, digests: Sequence[str]) -> bool:
    """True when ``presented`` hashes to one of ``digests`` (every digest is compared)."""
    if not presented:
        return False
    digest = key_digest(presented).encode()
    found = False
    for candidate in digests:
        found |= hmac.compare_digest(digest, candidate.encode())
    return found


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


async def require_api_key(request: Request) -> None:
    """FastAPI dependency of the ``/v1`` routes: 401 unless a configured key is presented.

    Without keys, 403 for a connection from another machine unless ``allow_anonymous``
    (:func:`serving.settings.open_to`): the app enforces the exposure rule itself, so
    ``uvicorn serving.app:create_app --factory --host 0.0.0.0`` is as safe as ``churn serve``.
    """
    settings = request.app.state.settings
    digests = settings.api_key_hashes
    if not digests:
        if not open_to(request.client.host if request.client else None, settings):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail="No API keys are configured, so /v1/* answers only this machine; the "
                       "operator must configure API keys (or allow anonymous access).")
        return
    if not key_matches(presented_key(request), digests):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            detail="A valid API key is required (Authorization: Bearer <key> or "
                                   "X-API-Key: <key>).",
                            headers={"WWW-Authenticate": "Bearer"})


def _main(argv: list[str]) -> int:
    if argv[:1] == ["new"]:
        key = secrets.token_urlsafe(32)
        print(f"key:    {key}\nsha256: {key_digest(key)}")
        return 0
    if len(argv) == 2 and argv[0] == "hash":
        print(key_digest(argv[1]))
        return 0
    print("usage: python -m serving.auth new | hash KEY", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
