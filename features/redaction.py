"""Redaction: connection URLs and text quoting them, with every secret masked.

Every message, log line and error that may quote a URL (a database, the MLflow tracking server,
the score store) goes through :func:`redact`. It masks:

* the password of a URL's user information, also when the password holds reserved characters
  such as ``/``, ``@``, ``:`` or a quote unencoded (``postgresql://u:p/a@ss@host/db`` ->
  ``postgresql://u:***@host/db``): everything between the user name and the last ``@`` before
  the host is masked;
* the values of query and fragment parameters that name a secret (``?password=...``,
  ``&token=...``, ``#access_token=...``, ``api_key``, ``secret``, ``sig`` ...);
* ``key=value`` secrets written outside a URL, as a libpq connection string or a driver's
  message quotes them (``host=db password=s3cret`` -> ``host=db password=***``), and the
  credentials of an ``Authorization: Bearer/Basic`` header quoted in text;

wherever the URL stands in the text (an exception message, a driver's error).
"""

from __future__ import annotations

import re

MASK = "***"

#: A URL's scheme and everything up to the next white space, ``<``, ``>`` or double quote. A
#: single quote is allowed inside (a password may hold one); one that closes a quoted URL is
#: given back by :func:`_redact_url`.
_URL = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<rest>[^\s\"<>]*)")
#: Names of parameters whose value is a secret.
_SECRET_NAME = (r"[a-z0-9_.-]*(?:pass|pwd|secret|token|key|sig|signature|credential|auth)"
                r"[a-z0-9_.-]*")
#: Query or fragment parameters whose value is a secret.
_SECRET_PARAM = re.compile(rf"(?P<name>[?&;#](?:{_SECRET_NAME}))=(?P<value>[^&;#\s'\"]*)",
                           re.IGNORECASE)
#: ``name=value`` secrets in free text (libpq connection strings, driver messages).
_SECRET_PAIR = re.compile(
    r"(?P<name>(?<![\w?&;#./-])(?:[a-z0-9]+_)*(?:password|passwd|pwd|secret|token|api_?key|"
    r"access_?key|credentials?))\s*=\s*(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;)]+)",
    re.IGNORECASE)
#: The credentials of an Authorization header quoted in text.
_AUTH_HEADER = re.compile(r"(?P<name>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})",
                          re.IGNORECASE)


def _redact_url(match: re.Match[str]) -> str:
    scheme, rest = match.group("scheme"), match.group("rest")
    tail = ""
    if rest.endswith("'") and "@" not in rest[rest.rfind("'"):]:
        # A quote that ends the URL ('postgresql://...') is not part of it.
        stripped = rest.rstrip("'")
        rest, tail = stripped, rest[len(stripped):]
    # An "@" in the query or fragment is not the userinfo's: look before the first "?" or "#",
    # unless no "@" stands there (then the password itself holds the "?" or "#").
    query = min((p for p in (rest.find("?"), rest.find("#")) if p >= 0), default=len(rest))
    at = rest.rfind("@", 0, query)
    if at < 0:
        at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, sep, _ = userinfo.partition(":")
        # Without a ":" the user information is a name only (or an "@" in a path): kept.
        rest = f"{user}:{MASK}@{rest}" if sep else f"{userinfo}@{rest}"
    rest = _SECRET_PARAM.sub(lambda m: f"{m.group('name')}={MASK}", rest)
    return scheme + rest + tail


def redact(text: object) -> str:
    """``text`` with the secrets of every URL in it, and ``key=value`` secrets, masked (see the
    module docstring)."""
    out = _URL.sub(_redact_url, str(text))
    out = _SECRET_PAIR.sub(lambda m: f"{m.group('name')}={MASK}", out)
    return _AUTH_HEADER.sub(lambda m: f"{m.group('name')}{MASK}", out)
