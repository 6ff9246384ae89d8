"""The Redis revocation store's staleness bound: a revocation made by one process is refused
by every other process within ``oauth.revocation_staleness_s``, with no round trip per request.

The bound is checked exactly with a clock the test moves (real Redis, two stores as two
processes would hold them), and end to end with two real gateway processes, polled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.stores.revocations import RedisRevocationStore
from tests.conftest import SandboxThread
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "/system/v1/inventory/stock/SKU-0001"


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_revocation_elsewhere_is_seen_once_the_staleness_has_passed(
    redis_url: str, redis_prefix: str
) -> None:
    clock = Clock()
    revoker = RedisRevocationStore(redis_url, prefix=redis_prefix, staleness_s=1.0)
    other = RedisRevocationStore(redis_url, prefix=redis_prefix, staleness_s=1.0, clock=clock)
    await revoker.open()
    await other.open()
    try:
        assert not await other.is_revoked("j1")
        reads = other.version_reads
        for _ in range(50):  # answered from memory: no version read, no EXISTS
            assert other.known_not_revoked("j1")
        assert other.version_reads == reads

        await revoker.revoke("j1", time.time() + 60)
        assert await revoker.is_revoked("j1")
        assert not revoker.known_not_revoked("j1")  # the revoker refuses it at once

        clock.now += 0.999  # within the bound the other process may still admit it
        assert other.known_not_revoked("j1")
        clock.now += 0.001  # the bound reached: it asks Redis, and refuses
        assert not other.known_not_revoked("j1")
        assert await other.is_revoked("j1")
        assert other.version_reads == reads + 1

        assert not await other.is_revoked("j2")  # a token not revoked is remembered again
        assert other.known_not_revoked("j2")
    finally:
        await revoker.close()
        await other.close()


async def test_staleness_zero_asks_redis_on_every_check(redis_url: str, redis_prefix: str) -> None:
    revoker = RedisRevocationStore(redis_url, prefix=redis_prefix, staleness_s=0)
    other = RedisRevocationStore(redis_url, prefix=redis_prefix, staleness_s=0)
    try:
        assert not await other.is_revoked("j1")
        assert not other.known_not_revoked("j1")
        await revoker.revoke("j1", time.time() + 60)
        assert await other.is_revoked("j1")
    finally:
        await revoker.close()
        await other.close()


# --------------------------------------------------------------------------- two processes


@contextmanager
def gateway_process(config: dict[str, Any], tmp: Path, name: str) -> Iterator[str]:
    """A real gateway process with these settings; yields its base URL."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRELLIS_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.events.gateway_process", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), f"gateway process did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def basic(client_id: str) -> dict[str, str]:
    return {
        "Authorization": "Basic " + b64encode(f"{client_id}:{client_id}-secret".encode()).decode()
    }


@pytest.mark.slow  # two gateway processes
async def test_a_revoked_token_is_refused_by_every_process(
    sandbox: SandboxThread, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    config = {
        "gateway": {
            "sandbox": {"base_port": sandbox.base_port},
            "data_dir": str(tmp_path / "data"),
            "redis_url": redis_url,
            "redis_prefix": redis_prefix,
        },
        "oauth": {"revocation_staleness_s": 1.0},
    }
    with (
        gateway_process(config, tmp_path, "a") as a,
        gateway_process(config, tmp_path, "b") as b,
    ):
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(
                a + "/oauth/token",
                data={"grant_type": "client_credentials", "scope": "system:read"},
                headers=basic("ops-admin"),
            )
            assert r.status_code == 200, r.text
            bearer = {"Authorization": "Bearer " + r.json()["access_token"]}
            for base in (a, b):  # each process has checked it and remembers it not revoked
                assert (await http.get(base + ROUTE, headers=bearer)).status_code == 200
            revoked = await http.post(
                a + "/oauth/revoke",
                data={"token": r.json()["access_token"]},
                headers=basic("ops-admin"),
            )
            assert revoked.status_code == 200
            assert (await http.get(a + ROUTE, headers=bearer)).status_code == 401

            async def refused_by_b() -> bool:
                return (await http.get(b + ROUTE, headers=bearer)).status_code == 401

            await eventually(refused_by_b, message="process b refuses the revoked token")
            assert (await http.get(a + ROUTE, headers=bearer)).status_code == 401
