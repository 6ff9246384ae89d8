"""A gateway process killed with SIGKILL in the middle of an order: the next process on the
same data directory takes the operation over from the saga log and undoes what was made, the
client's retry learns that outcome (not a 409 for minutes, never a 201), and the backends keep
no reservation, no open order, no live invoice and no second CRM task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher

from system_apis.config import BACKEND_NAMES
from system_apis.models import OrderStatus
from system_apis.sandbox import seed
from tests import crm_swap
from tests.conftest import SandboxThread
from tests.eventually import eventually
from tests.faults.conftest import OPERATIONS
from tests.faults.test_order_faults import assert_nothing_kept, records
from tests.gateway.helpers import token
from tests.process.harness import RESILIENCE, Gw

pytestmark = pytest.mark.slow  # gateway subprocesses, killed and restarted

ROOT = Path(__file__).resolve().parents[2]
CLIENT = "saga-tester"


def config(sandbox: SandboxThread, tmp: Path) -> dict[str, Any]:
    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    return {
        "gateway": {
            "sandbox": {"base_port": sandbox.base_port},
            "data_dir": str(tmp / "data"),
            "operations": OPERATIONS,
        },
        "backends": {name: dict(RESILIENCE) for name in BACKEND_NAMES},
        "oauth": {"keys_dir": str(tmp / "keys"), "generate_if_missing": True},
        "clients": {
            CLIENT: {
                "secret_hash": hasher.hash(f"{CLIENT}-secret"),
                "scopes": ["process:read", "process:write", "admin"],
                "tier": "internal",
            }
        },
        "ratelimit": {"enabled": False},
    }


@contextlib.contextmanager
def gateway(
    settings: dict[str, Any], tmp: Path, name: str, *, log: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A gateway subprocess on ``settings``; its JSON log lines go to ``log`` when given."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(settings))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRELLIS_REDIS_URL", None)
    log_file = log.open("w") if log is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.events.gateway_process", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if log_file is None else log_file,
        text=True,
    )
    if log_file is not None:
        log_file.close()  # the child holds its own copy
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), f"gateway process did not start: {line!r}"
        yield proc, f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def post_order(url: str, bearer: str, req: dict[str, Any], idem: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {bearer}", "Idempotency-Key": idem}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/process/v1/orders", json=req, headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None)


KILLED_IN = [  # the step the kill lands in: its backend, the path it posts to, a customer
    ("billing.create_invoice", "billing", "/v1/invoices", 690),
    ("crm.log_activity", "crm", crm_swap.crm().tasks_path, 691),
]


@pytest.mark.parametrize(
    ("step", "backend", "path", "who"), KILLED_IN, ids=[k[0] for k in KILLED_IN]
)
async def test_sigkill_mid_order_is_undone_by_the_next_process(
    clean: Gw, sandbox: SandboxThread, tmp_path: Path, step: str, backend: str, path: str, who: int
) -> None:
    p = seed.people()[who]
    sku = [s.sku for s in seed.skus() if s.on_hand >= 150][-1 - who % 2]
    before = await records(clean, p, sku)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 2}]}
    idem = uuid.uuid4().hex
    settings = config(sandbox, tmp_path)
    await sandbox.set_faults(backend, response_ms=3000, paths=[path])
    with gateway(settings, tmp_path, "first") as (proc, url):
        bearer = await token(url, CLIENT)
        placing = asyncio.create_task(post_order(url, bearer, req, idem))

        async def step_requested() -> bool:
            stats = await sandbox.control(backend, "GET", "/__stats")
            return f"POST {path}" in stats.get("hits", {})  # the create, not a search

        await eventually(step_requested)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with contextlib.suppress(aiohttp.ClientError):
            await placing
            pytest.fail("the killed gateway answered")
    await sandbox.clear_faults()
    mid = await records(clean, p, sku)
    made = mid["orders"].keys() - before["orders"].keys()
    assert len(made) == 1 and mid["stock"] < before["stock"], "the kill came too early"
    with gateway(settings, tmp_path, "second") as (_, url):
        bearer = await token(url, CLIENT)

        async def outcome() -> tuple[int, Any] | None:
            status, body = await post_order(url, bearer, req, idem)
            return None if status == 409 else (status, body)

        status, body = await eventually(outcome)
        assert status == 503 and body["type"] == "/problems/operation-interrupted", body
        after = await eventually(
            lambda: _undone(clean, p, sku, before), message="the order was not undone"
        )
    assert_nothing_kept(before, after)
    assert after["tasks"] - before["tasks"] <= 1  # the CRM step is never run twice
    db = tmp_path / "data" / "trellis.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        subjects = {
            r[0] for r in conn.execute("SELECT subject FROM outbox WHERE type = 'order.placed'")
        }
    assert not subjects & made


async def _undone(
    gw: Gw, p: seed.Person, sku: str, before: dict[str, Any]
) -> dict[str, Any] | None:
    now = await records(gw, p, sku)
    made = now["orders"].keys() - before["orders"].keys()
    if now["stock"] != before["stock"]:
        return None
    if not all(now["orders"][n].status is OrderStatus.CANCELLED for n in made):
        return None
    return now
