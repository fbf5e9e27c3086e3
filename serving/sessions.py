"""The CS console's sessions: a signed, expiring token in a cookie, never the API key.

``POST /ui/login`` checks the key like the API does (:func:`serving.auth.key_matches`) and sets
an HttpOnly, SameSite=Strict cookie without Max-Age (gone when the browser closes) holding
``expiry.nonce.signature``: an HMAC-SHA256 of expiry and nonce under the server's console secret
(:attr:`ServingSettings.console_secret`, else a random one per process; ``churn serve`` makes one
that all its workers share). The key itself is never stored, in the browser or the server. The
logout form carries a CSRF token derived from the session token, so another site cannot end a
session (SameSite=Strict already keeps the cookie off cross-site requests).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi import FastAPI

COOKIE = "churn_console"
#: How long a console session lasts at most (the cookie also ends with the browser session).
MAX_AGE_S = 12 * 3600


class Sessions:
    """Issues and checks console session tokens signed with ``secret``."""

    def __init__(self, secret: bytes, max_age_s: int = MAX_AGE_S) -> None:
        self._secret = secret
        self.max_age_s = max_age_s

    def _sign(self, message: str) -> str:
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        expiry = int((time.time() if now is None else now) + self.max_age_s)
        body = f"{expiry}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign(body)}"

    def valid(self, token: str | None, now: float | None = None) -> bool:
        """True for an unexpired token this secret signed."""
        if not token or token.count(".") != 2:
            return False
        body, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return False
        expiry = body.partition(".")[0]
        return expiry.isdigit() and int(expiry) > (time.time() if now is None else now)

    def csrf(self, token: str) -> str:
        """The logout form's CSRF token for session ``token``."""
        return self._sign("csrf:" + token)

    def csrf_ok(self, token: str | None, value: str | None) -> bool:
        return bool(token and value) and hmac.compare_digest(self.csrf(token), value)


def sessions_of(app: FastAPI) -> Sessions:
    """The app's sessions, made on first use from the configured console secret (or a random
    one: sessions then end when the process does)."""
    sessions = getattr(app.state, "console_sessions", None)
    if sessions is None:
        secret = app.state.settings.console_secret
        sessions = Sessions(secret.encode() if secret else secrets.token_bytes(32))
        app.state.console_sessions = sessions
    return sessions
