"""Schema fuzzing: schemathesis sends requests generated from the API's own OpenAPI document to
a real server (``serving.app.serve``, as ``churn serve`` runs it) with a valid API key, and
checks that none is a server error and every status is one the document declares.

At least :data:`MIN_CASES` requests in all; the count is asserted by the last test of the file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from serving.auth import key_digest
from serving.store import ScoreStore
from tests.servers import Server, start_server
from tests.serving.test_hardening_server import serve_argv
from tests.serving.test_store import make_score

KEY = "fuzz-key-19c0ffee"
#: Examples per operation: operations without parameters give one case, the rest this many.
EXAMPLES = 260
MIN_CASES = 1000
CASES: list[str] = []


@pytest.fixture(scope="module")
def fuzz_server(local_registry, server_workdir) -> Iterator[Server]:
    store_url = f"sqlite:///{server_workdir / 'fuzz-scores.db'}"
    store = ScoreStore(store_url)
    store.write([make_score("A1"), make_score("B 2")], as_of=dt.date(2026, 1, 1),
                model_name=local_registry.model_name, model_version=local_registry.version)
    store.engine.dispose()
    env = {"CHURN_TRACKING_URI": local_registry.tracking_uri, "CHURN_POLL_SECONDS": "0",
           "CHURN_API_KEY_HASHES": json.dumps([key_digest(KEY)]),
           "CHURN_SCORE_STORE_URL": store_url, "CHURN_LOG_REQUESTS": "false",
           "CHURN_LOG_LEVEL": "warning"}
    with start_server(serve_argv, env, server_workdir, ready=True) as server:
        yield server


def _operations(server: Server) -> list:
    loaded = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [result.ok() for result in loaded.get_all_operations()]


def test_generated_requests_get_no_server_error_and_a_documented_status(fuzz_server):
    """Each operation of the OpenAPI document, fuzzed with Hypothesis (schemathesis's
    strategies; its pytest plugin is not used: it does not run on this pytest)."""
    operations = _operations(fuzz_server)
    assert len(operations) >= 6
    auth = {"Authorization": f"Bearer {KEY}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            CASES.append(case.operation.label)
            case.call_and_validate(base_url=fuzz_server.url, headers=auth, timeout=30,
                                   checks=[not_a_server_error, status_code_conformance])

        fuzz()


def test_the_fuzzing_sent_enough_cases(fuzz_server):
    print(f"schemathesis cases: {len(CASES)} {dict(Counter(CASES))}")
    assert len(CASES) >= MIN_CASES, len(CASES)
    assert '"event": "internal_error"' not in fuzz_server.output()
