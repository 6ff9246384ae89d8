"""Composed views against a slow or recovering CRM.

One overall deadline bounds a view (``gateway.views.deadline_s``); a call that timed out is
reported as a timeout even when the breaker opened meanwhile; after the breaker recovers, the
concurrent calls of one view share the half-open trial's outcome, so the view is complete.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from system_apis.sandbox import seed
from tests import crm_swap
from tests.conftest import SandboxThread
from tests.process.harness import RESILIENCE, assert_problem, running_gateway

pytestmark = pytest.mark.slow

PEOPLE = seed.people()


def contact_path(person: seed.Person) -> str:
    return crm_swap.crm().contact_path(person.crm_contact_id)


def crm(**policy: Any) -> dict[str, Any]:
    return {"backends": {"crm": {**RESILIENCE, **policy}}}


async def contact_hits(sandbox: SandboxThread, person: seed.Person) -> int:
    hits = await sandbox.hits("crm")
    return sum(n for key, n in hits.items() if key.endswith(" " + contact_path(person)))


async def test_the_360_answers_504_at_its_deadline_not_after_every_crm_retry(
    clean_sandbox: SandboxThread, tmp_path: Path
) -> None:
    person = PEOPLE[21]
    overrides = crm(timeouts={"connect_s": 1, "read_s": 2, "total_s": 3})
    async with running_gateway(
        clean_sandbox,
        tmp_path,
        gateway={"views": {"deadline_s": 1, "section_timeout_s": 1}},
        **overrides,
    ) as gw:
        await clean_sandbox.set_faults("crm", response_ms=2500, paths=[contact_path(person)])
        await clean_sandbox.reset_hits("crm")
        status, headers, body = await gw.call(
            "GET", f"/process/v1/customers/{person.crm_contact_id}"
        )
        assert_problem(status, headers, body, 504)
        assert body["type"].endswith("/upstream-timeout"), body
        assert "deadline" in body["detail"], body
        assert body["backend"] == "crm"
        # the CRM's retry of the contact was never sent: the view gave up first
        assert await contact_hits(clean_sandbox, person) == 1


async def test_under_concurrency_a_timeout_is_reported_as_a_timeout(
    clean_sandbox: SandboxThread, tmp_path: Path
) -> None:
    """Five views wait on a slow CRM; their first attempts' timeouts open the breaker, so each
    retry meets an open circuit: the answer is still the timeout each one had."""
    person = PEOPLE[22]
    overrides = crm(
        timeouts={"connect_s": 1, "read_s": 1, "total_s": 1},
        retry={"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
        breaker={"failure_threshold": 3, "reset_timeout_s": 30},
    )
    async with running_gateway(
        clean_sandbox, tmp_path, gateway={"views": {"deadline_s": 10}}, **overrides
    ) as gw:
        await clean_sandbox.set_faults("crm", response_ms=1500, paths=[contact_path(person)])
        path = f"/process/v1/customers/{person.crm_contact_id}"
        answers = await asyncio.gather(*(gw.call("GET", path) for _ in range(5)))
        kinds = [body["type"].rsplit("/", 1)[-1] for _, _, body in answers]
        assert kinds == ["upstream-timeout"] * 5, kinds


async def test_after_the_breaker_recovers_the_first_360_is_complete(
    clean_sandbox: SandboxThread, tmp_path: Path
) -> None:
    person = PEOPLE[23]
    overrides = crm(
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 1, "reset_timeout_s": 0.5, "half_open_max_calls": 1},
    )
    async with running_gateway(clean_sandbox, tmp_path, **overrides) as gw:
        path = f"/process/v1/customers/{person.crm_contact_id}"
        status, _, body = await gw.call("GET", path)  # the store learns the customer's keys
        assert status == 200 and not body["partial"], body
        await clean_sandbox.set_faults("crm", fail_next=1, error_statuses=[500])
        status, _, _ = await gw.call("GET", path)
        assert status >= 500  # the contact failed: the breaker is open
        await clean_sandbox.clear_faults()
        await asyncio.sleep(0.6)  # past reset_timeout_s: the next call is the half-open trial

        status, _, body = await gw.call("GET", path)
        assert status == 200, body
        assert body["unavailable"] == [] and not body["partial"], body
