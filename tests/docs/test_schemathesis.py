"""schemathesis against the live gateway: no server errors, answers as documented.

Read-only operations only (GET): generated writes would fill the shared sandbox with junk that
other tests count. Bounded and deterministic: few examples per operation, a fixed seed, no
example database.

The schema is built in-process at collection (``test_openapi`` proves the served document is the
same one): schemathesis 4.32's lazy ``from_fixture`` loader uses ``Node._nodeid``, which pytest 9
does not have.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import build_openapi
from tests.docs.live import FUZZER, GatewayThread, gateway_with_docs

pytestmark = pytest.mark.slow  # hundreds of generated requests against a live gateway

BACKEND_STATUSES = {502, 503, 504}
"""Statuses a view may answer when a backend fails, if its operation declares them."""


@pytest.fixture(scope="session")
def fuzz_token(live_gateway: GatewayThread) -> str:
    """A real token holding every scope (see ``FUZZER``), from the gateway's token endpoint."""
    return live_gateway.token(FUZZER)


_unused = Path(tempfile.gettempdir()) / "trellis-openapi-unused"  # settings only name it
schema = schemathesis.openapi.from_dict(
    build_openapi(gateway_with_docs(9101, _unused).routes)
).include(method="GET")


def _declared(case: Any) -> set[int]:
    return {int(s) for s in case.operation.definition.raw["responses"] if s.isdigit()}


@schema.parametrize()
@seed(20260517)
@settings(
    max_examples=8,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_get_operations_answer_as_documented(
    case: Any, live_gateway: GatewayThread, fuzz_token: str
) -> None:
    """No 5xx except a backend failure the operation declares; status, type and body conform."""
    response = case.call(
        base_url=live_gateway.url,
        headers={"Authorization": f"Bearer {fuzz_token}"},
        timeout=15,
    )
    if response.status_code in BACKEND_STATUSES & _declared(case):
        body = response.json()
        assert body.get("backend"), f"{case.operation.label}: {response.status_code} {body}"
        pytest.fail(
            f"{case.operation.label} answered {response.status_code} from backend "
            f"{body['backend']} for {case.path_parameters} {case.query}: {body.get('detail')}"
        )
    case.validate_response(
        response,
        transport_kwargs={"base_url": live_gateway.url},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
