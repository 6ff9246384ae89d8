"""Measure the customer 360's p50 with every sandbox backend at +50 ms (docs/performance.md,
scenario 7), through a whole gateway on loopback built by the tests' harness: a timing on a
shared 2-core box is a report, not a pass/fail.
Run: ``.venv/bin/python -m bench.measure_360 [calls] [latency_ms]``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from system_apis.config import BACKEND_NAMES
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.process.harness import RESILIENCE, running_gateway

UNPACED = {"rate": 100_000, "period_s": 1}
"""As the bench does: vendor pacing lifted, so the view measures fan-out, not the pacer."""


async def measure(calls: int, latency_ms: float) -> None:
    sandbox = SandboxThread()
    sandbox.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            backends = {n: {**RESILIENCE, "rate_limit": UNPACED} for n in BACKEND_NAMES}
            async with running_gateway(sandbox, Path(tmp), backends=backends) as gw:
                await sandbox.control("erp", "POST", "/__latency", {"min_ms": 0, "max_ms": 0})
                await sandbox.control("support", "POST", "/__ratelimit", {"per_second": 10**6})
                for name in BACKEND_NAMES:
                    await sandbox.set_faults(name, latency_ms=latency_ms)
                person = seed.people()[1]
                path = f"/process/v1/customers/{person.crm_contact_id}"
                times: list[float] = []
                for _ in range(calls):
                    start = time.perf_counter()
                    status, _, body = await gw.call("GET", path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert status == 200 and not body["partial"], body
                first, rest = times[0], times[1:]
                print(
                    f"360 at +{latency_ms:g} ms/backend, {calls} calls: first {first:.1f} ms, "
                    f"p50 {statistics.median(times):.1f} ms, "
                    f"p50 after the first {statistics.median(rest):.1f} ms, "
                    f"min {min(times):.1f}, max {max(times):.1f}"
                )
                await sandbox.clear_faults()
    finally:
        sandbox.stop()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    ms = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    asyncio.run(measure(n, ms))
