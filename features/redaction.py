"""Redaction: connection URLs and text quoting them, with every secret masked.

Every message, log line and error that may quote a URL (a database, the MLflow tracking server,
the score store) goes through :func:`redact`. It masks:

* the password of a URL's user information, also when the password holds reserved characters
  such as ``/``, ``@`` or ``:`` unencoded (``postgresql://u:p/a@ss@host/db`` ->
  ``postgresql://u:***@host/db``): everything between the user name and the last ``@`` before
  the host is masked;
* the values of query parameters that name a secret (``?password=...``, ``&token=...``,
  ``api_key``, ``secret``, ``sig`` ...);

wherever the URL stands in the text (an exception message, a driver's error).
"""

from __future__ import annotations

import re

MASK = "***"

#: A URL's scheme and everything up to the next white space or quote.
_URL = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
#: Query parameters whose value is a secret.
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[a-z0-9_.-]*(?:pass|pwd|secret|token|key|sig|signature|credential|auth)"
    r"[a-z0-9_.-]*))=(?P<value>[^&;#\s'\"]*)", re.IGNORECASE)


def _redact_url(match: re.Match[str]) -> str:
    scheme, rest = match.group("scheme"), match.group("rest")
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, sep, _ = userinfo.partition(":")
        # Without a ":" the user information is a name only (or an "@" in a path): kept.
        rest = f"{user}:{MASK}@{rest}" if sep else f"{userinfo}@{rest}"
    rest = _SECRET_PARAM.sub(lambda m: f"{m.group('name')}={MASK}", rest)
    return scheme + rest


def redact(text: object) -> str:
    """``text`` with the secrets of every URL in it masked (see the module docstring)."""
    return _URL.sub(_redact_url, str(text))
