"""``/readyz`` follows what the gateway can serve: its stores and its critical backends.

A Redis or PostgreSQL (``database_url``) that is down makes every authenticated call a 503, so
readiness is 503 too; a non-critical backend whose breaker is open only degrades the views that
use it, so readiness stays 200 (the load balancer keeps the gateway); a critical backend down
is 503.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.stores.readiness import StoreProbe
from tests.conftest import SandboxThread
from tests.eventually import eventually
from tests.faults.conftest import relayed_url
from tests.faults.tcp_proxy import TcpRelay
from tests.gateway.helpers import token
from tests.gateway.test_postgres_stores import forwarded
from tests.process.harness import RESILIENCE, Gw, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.slow


async def readiness(gw: Gw, admin: str | None) -> tuple[int, dict[str, object]]:
    """The admin's detailed answer, or (``admin`` None) the load balancer's."""
    headers = {"Authorization": f"Bearer {admin}"} if admin else {}
    status, _, body = await gw.call("GET", "/readyz", None, headers=headers)
    return status, body


async def test_readyz_is_503_while_redis_is_down_and_200_when_it_is_back(
    sandbox: SandboxThread,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    redis_relay: TcpRelay,
) -> None:
    url = relayed_url(redis_url, redis_relay)
    async with running_gateway(
        sandbox, tmp_path, gateway={"redis_url": url, "redis_prefix": redis_prefix}
    ) as gw:
        assert (await readiness(gw, None))[0] == 200
        await redis_relay.stop()

        async def not_ready() -> dict[str, object] | None:
            status, body = await readiness(gw, None)
            return body if status == 503 else None

        body = await eventually(not_ready, timeout=10)
        # as a load balancer asks: without a token (an admin's cannot be checked without Redis)
        assert body == {"status": "not ready"}, body
        await redis_relay.start()

        async def ready() -> bool:
            return (await readiness(gw, None))[0] == 200

        await eventually(ready, timeout=10)


async def test_a_non_critical_breaker_open_keeps_readyz_200_a_critical_one_does_not(
    clean_sandbox: SandboxThread, tmp_path: Path
) -> None:
    trips = {
        **RESILIENCE,
        "retry": {"max_attempts": 1},
        "breaker": {"failure_threshold": 1, "reset_timeout_s": 60},
    }
    async with running_gateway(
        clean_sandbox, tmp_path, backends={"marketing": trips, "crm": trips}
    ) as gw:
        admin = await token(gw.url, "test-everything")
        await clean_sandbox.set_faults("marketing", error_rate=1.0, error_statuses=[500])
        auth = {"Authorization": f"Bearer {admin}"}
        status, _, _ = await gw.call("GET", "/system/v1/marketing/contacts", None, headers=auth)
        assert status >= 500
        status, body = await readiness(gw, admin)
        assert body["backends"]["marketing"]["breaker"] == "open", body  # type: ignore[index]
        assert status == 200, body

        await clean_sandbox.set_faults("crm", error_rate=1.0, error_statuses=[500])
        await gw.call("GET", "/system/v1/crm/contacts", None, headers=auth)

        async def not_ready() -> dict[str, object] | None:
            status, body = await readiness(gw, admin)
            return body if status == 503 else None

        body = await eventually(not_ready, timeout=10)
        assert any(str(r).startswith("crm:") for r in body["reasons"]), body  # type: ignore[attr-defined]


async def test_readyz_is_503_while_postgresql_is_down_and_200_when_it_is_back(
    sandbox: SandboxThread, tmp_path: Path, database_url: str
) -> None:
    async with (
        forwarded(database_url) as (relay, url),
        running_gateway(sandbox, tmp_path, gateway={"database_url": url}) as gw,
    ):
        assert (await readiness(gw, None))[0] == 200
        await relay.stop()

        async def not_ready() -> dict[str, object] | None:
            status, body = await readiness(gw, None)
            return body if status == 503 else None

        body = await eventually(not_ready, timeout=10)
        assert body == {"status": "not ready"}, body  # an admin's token needs the database too
        await relay.start()

        async def ready() -> bool:
            return (await readiness(gw, None))[0] == 200

        await eventually(ready, timeout=10)


async def test_an_unreachable_database_is_a_store_problem_without_its_address(
    tmp_path: Path,
) -> None:
    port = free_port()
    probe = StoreProbe(
        None, tmp_path, database_url=f"postgresql://trellis:s3cret@127.0.0.1:{port}/trellis_test"
    )
    try:
        problems = await probe.problems(2.0)
    finally:
        await probe.close()
    assert len(problems) == 1 and problems[0].startswith("postgresql: unavailable"), problems
    assert str(port) not in problems[0] and "s3cret" not in problems[0]
