"""schemathesis over the whole OpenAPI document: no server error, no answer outside the schema.

Every operation is fuzzed against the API serving the simulated month, with a bounded number of
examples per operation. The live stream (``/stream``) is left out: an event stream never ends,
and schemathesis reads a whole body before checking it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi import checks as openapi_checks

from pantau.tools.services import free_port
from tests.fixtures.api import api_settings, serve

EXAMPLES_PER_OPERATION = 30
CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
]


@pytest.fixture(scope="session")
def fuzzed_api(month_db: str) -> Iterator[str]:
    # A server of its own: the fuzzer's requests must not change what other tests read.
    with serve(api_settings(month_db, port=free_port(), pool_max_size=6)) as base:
        yield base


@pytest.mark.slow
def test_every_operation_answers_within_its_schema(fuzzed_api: str) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_api}/openapi.json").exclude(path="/stream")
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        # Generated cases, and cases built around the document's examples (real sensor ids
        # and metrics, so that the answers with data are fuzzed too).
        for strategy in [operation.as_strategy(), *operation.get_strategies_from_examples()]:

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS, timeout=30)

            try:
                fuzz()
            except Exception as error:  # every operation's failure is reported, not the first
                failures[operation.label] = str(error)[:2000]
    assert operations >= 10
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
