"""Slow vendors: a write whose answer never came may have been applied, and says so."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from system_apis.sandbox import seed
from tests import crm_swap
from tests.conftest import SandboxThread
from tests.process.harness import assert_problem, running_gateway

pytestmark = pytest.mark.slow


async def test_a_crm_task_that_timed_out_is_listed_as_not_undone(
    clean_sandbox: SandboxThread, tmp_path: Path
) -> None:
    """The CRM creates the task but answers after the client's timeout: the order is undone
    and the task, which exists, is reported in ``not_undone`` (an operator may remove it)."""
    person = seed.people()[11]
    sku = next(s.sku for s in seed.skus() if s.on_hand >= 150)
    async with running_gateway(clean_sandbox, tmp_path) as gw:
        req = {"customer_id": person.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
        await clean_sandbox.set_faults("crm", response_ms=4000, paths=[crm_swap.crm().tasks_path])
        status, headers, body = await gw.call(
            "POST", "/process/v1/orders", json=req, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        await clean_sandbox.clear_faults()
        assert_problem(status, headers, body, 504)
        assert body["step"] == "crm.log_activity", body
        # the record the timed-out call left behind
        tasks = [t async for t in gw.systems.crm.iter_tasks(person.crm_contact_id)]
        placed = [
            t for t in tasks if t.subject.startswith("Order ") and t.subject.endswith(" placed")
        ]
        assert placed, tasks
        assert "crm.log_activity" in body["not_undone"], body
        assert "outcome unknown" in body["not_undone"]["crm.log_activity"]
