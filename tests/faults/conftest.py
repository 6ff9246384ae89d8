from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from tests.conftest import SandboxThread
from tests.faults.tcp_proxy import TcpRelay
from tests.process.harness import Gw, running_gateway

OPERATIONS = {  # a quick sweeper, so takeovers happen within a test's patience
    "lease_s": 2,
    "sweep_interval_s": 0.1,
    "backoff_s": 0.1,
    "backoff_max_s": 0.5,
    "undo_attempts": 3,
}


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    async with running_gateway(
        sandbox, tmp_path_factory.mktemp("faults"), gateway={"operations": OPERATIONS}
    ) as g:
        yield g


@pytest.fixture
async def clean(gw: Gw, clean_sandbox: SandboxThread) -> Gw:
    return gw


@pytest.fixture
async def redis_relay(redis_url: str) -> AsyncIterator[TcpRelay]:
    """A Redis a test can take down and bring back: a relay in front of the machine's real one."""
    parsed = urlparse(redis_url)
    relay = TcpRelay(parsed.hostname or "127.0.0.1", parsed.port or 6379)
    await relay.start()
    yield relay
    await relay.stop()


def relayed_url(redis_url: str, relay: TcpRelay) -> str:
    """``redis_url`` (its database) through the relay."""
    parsed = urlparse(redis_url)
    return parsed._replace(netloc=f"127.0.0.1:{relay.port}").geturl()
