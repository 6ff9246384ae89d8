"""Fault fixtures: a Redis that a test can take down and bring back (a relay in front of the
machine's real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from tests.faults.tcp_proxy import TcpRelay


@pytest.fixture
async def redis_relay(redis_url: str) -> AsyncIterator[TcpRelay]:
    parsed = urlparse(redis_url)
    relay = TcpRelay(parsed.hostname or "127.0.0.1", parsed.port or 6379)
    await relay.start()
    yield relay
    await relay.stop()


def relayed_url(redis_url: str, relay: TcpRelay) -> str:
    """``redis_url`` (its database) through the relay."""
    parsed = urlparse(redis_url)
    return parsed._replace(netloc=f"127.0.0.1:{relay.port}").geturl()
