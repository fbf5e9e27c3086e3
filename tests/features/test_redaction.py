"""One redaction rule for every URL in every message: passwords and query-string secrets masked."""

from __future__ import annotations

import pytest

from features.redaction import redact


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://u:secret@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
    # reserved characters left unencoded in the password
    ("postgresql://u:pa/ss@db/x", "postgresql://u:***@db/x"),
    ("postgresql://u:p@ss:w/rd@db:5432/x", "postgresql://u:***@db:5432/x"),
    ("http://user:pa%40ss@mlflow.internal", "http://user:***@mlflow.internal"),
    # secrets in the query string
    ("postgresql://db/x?user=u&password=hunter2", "postgresql://db/x?user=u&password=***"),
    ("https://h/api?api_key=abc&x=1&sslpassword=s", "https://h/api?api_key=***&x=1&sslpassword=***"),
    ("https://h/p?token=t1", "https://h/p?token=***"),
    # no secret: unchanged
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("http://user@host/path", "http://user@host/path"),
    ("no url here", "no url here"),
])
def test_secrets_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_urls_inside_text_are_masked_and_the_rest_kept() -> None:
    text = ("could not connect to server: postgresql://app:s3cr3t@10.0.0.5:5432/prod "
            "(retry 'http://ops:tok@mlflow:5000/api?token=abc') failed")
    out = redact(text)
    for secret in ("s3cr3t", "tok@", "abc"):
        assert secret not in out
    assert out.startswith("could not connect to server: postgresql://app:***@10.0.0.5:5432/prod")
    assert out.endswith("failed")


@pytest.mark.parametrize(("text", "expected"), [
    # a quote in the password, and a quote that closes a quoted URL
    ("connect to 'postgresql://u:pa'ss@db/x' failed", "connect to 'postgresql://u:***@db/x' failed"),
    # an "@" in the query string is not the password's end; "?" in the password is
    ("postgresql://u:p@ss@db/x?sslmode=require&password=a@b",
     "postgresql://u:***@db/x?sslmode=require&password=***"),
    ("http://u:pa?ss@host/x", "http://u:***@host/x"),
    # secrets in the fragment (OAuth's implicit flow)
    ("https://app/cb#access_token=abc&state=1", "https://app/cb#access_token=***&state=1"),
    # key=value secrets outside a URL: a libpq connection string, an environment dump
    ("host=db user=u password=s3cr3t dbname=x", "host=db user=u password=*** dbname=x"),
    ("client_secret = 'a b' ok", "client_secret=*** ok"),
    ("AWS_SECRET_ACCESS_KEY=xyz", "AWS_SECRET_ACCESS_KEY=***"),
    # an Authorization header quoted in a message
    ("headers: Authorization: Bearer abcdefghij.klm", "headers: Authorization: Bearer ***"),
    # feature names that merely contain "key" are not secrets
    ("key_report_views_30d=3", "key_report_views_30d=3"),
])
def test_harder_secrets_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
