"""Two gateway hosts on one PostgreSQL database: the host running an order is killed with
SIGKILL while its invoice step waits on the vendor, and the OTHER host, still running, takes the
operation over from the shared saga log within a bounded time and undoes what was made. Proven
where it counts: the ERP order is cancelled, the invoice void, the reservation released (stock
back), the saga log in PostgreSQL says failed with every made step undone, nothing was
announced, the surviving host's log names the takeover, and the client's retry on the
surviving host gets that outcome."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from system_apis.models import InvoiceStatus, ReservationStatus
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.eventually import eventually
from tests.faults.test_kill_mid_saga import CLIENT, _undone, config, gateway, post_order
from tests.faults.test_order_faults import assert_nothing_kept, records
from tests.gateway.helpers import token
from tests.process.harness import Gw

pytestmark = pytest.mark.slow  # two gateway subprocesses, one killed

TAKEOVER_S = 20.0
"""The surviving host settles the operation within this long of the kill (lease 2 s, sweeps
every 0.1 s, then the undo calls)."""


def host_settings(sandbox: SandboxThread, tmp: Path, name: str, database_url: str) -> Any:
    """One host: a data dir of its own, the shared database, the shared signing keys."""
    settings = config(sandbox, tmp)
    settings["gateway"]["data_dir"] = str(tmp / name)
    settings["gateway"]["database_url"] = database_url
    return settings


async def test_sigkill_of_one_host_mid_order_is_undone_by_the_other_host(
    clean: Gw, sandbox: SandboxThread, tmp_path: Path, database_url: str
) -> None:
    p = seed.people()[692]
    sku = [s.sku for s in seed.skus() if s.on_hand >= 150][-1]
    before = await records(clean, p, sku)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 2}]}
    idem = uuid.uuid4().hex
    path = "/v1/invoices"
    survivor_log = tmp_path / "b.log"
    with (
        gateway(host_settings(sandbox, tmp_path, "a", database_url), tmp_path, "a") as (proc, a),
        gateway(
            host_settings(sandbox, tmp_path, "b", database_url), tmp_path, "b", log=survivor_log
        ) as (_, b),
    ):
        bearer_a, bearer_b = await token(a, CLIENT), await token(b, CLIENT)
        await sandbox.set_faults("billing", response_ms=3000, paths=[path])
        placing = asyncio.create_task(post_order(a, bearer_a, req, idem))

        async def invoice_requested() -> bool:
            stats = await sandbox.control("billing", "GET", "/__stats")
            return any(k.startswith(f"POST {path}") for k in stats.get("hits", {}))

        await eventually(invoice_requested)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.monotonic()
        with contextlib.suppress(aiohttp.ClientError):
            await placing
            pytest.fail("the killed host answered")
        await sandbox.clear_faults()

        conn = await asyncpg.connect(database_url)
        try:
            op = await conn.fetchrow("SELECT id, owner, state FROM operations")
            assert op["state"] == "running" and op["owner"] is not None, dict(op)
            mid = await records(clean, p, sku)
            made = mid["orders"].keys() - before["orders"].keys()
            assert len(made) == 1 and mid["stock"] < before["stock"], "the kill came too early"

            async def settled() -> asyncpg.Record | None:
                row = await conn.fetchrow(
                    "SELECT state, status, body, owner FROM operations WHERE id = $1", op["id"]
                )
                return row if row["state"] != "running" else None

            final = await eventually(settled, timeout=TAKEOVER_S, message="not taken over")
            assert time.monotonic() - killed_at < TAKEOVER_S
            assert final["state"] == "failed" and final["owner"] is None, dict(final)
            problem = orjson.loads(final["body"])
            assert final["status"] == 503 and problem["problem_type"] == "operation-interrupted"
            steps = {
                r["name"]: r
                for r in await conn.fetch(
                    "SELECT name, state, result FROM operation_steps WHERE op_id = $1", op["id"]
                )
            }
            assert {n: r["state"] for n, r in steps.items()} == {
                "inventory.reserve": "undone",
                "erp.create_order": "undone",
                "billing.create_invoice": "undone",  # its outcome was looked up, then voided
            }
            announced = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE type = 'order.placed' AND subject = ANY($1)",
                list(made),
            )
            assert announced == 0
        finally:
            await conn.close()

        # the client's retry, on the surviving host, gets the operation's one outcome
        status, body = await post_order(b, bearer_b, req, idem)
        assert status == 503 and body["type"] == "/problems/operation-interrupted", body

    after = await eventually(lambda: _undone(clean, p, sku, before), message="not undone")
    assert_nothing_kept(before, after)
    (number,) = made
    assert number in after["orders"]  # cancelled, not deleted (assert_nothing_kept)
    invoice_id = orjson.loads(steps["billing.create_invoice"]["result"])["id"]
    assert after["invoices"][invoice_id].status is InvoiceStatus.VOID
    reservation_id = orjson.loads(steps["inventory.reserve"]["result"])["id"]
    reservation = await clean.systems.inventory.get_reservation(reservation_id)
    assert reservation.status is ReservationStatus.RELEASED
    takeover = [
        line
        for line in survivor_log.read_text().splitlines()
        if '"operation recovered"' in line and op["id"] in line
    ]
    assert takeover and '"state":"failed"' in takeover[0].replace(" ", ""), takeover
