"""What the saga log adds to a durable operation: a 3-step operation recorded in the SQLite
log (start, intent and outcome of each step, finish), with no backend calls, so the number is
the log's own cost. ``python -m bench.saga_log [n]``."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gateway.stores.saga_sqlite import SqliteSagaLog
from process_apis.ports import OpState, StepState, StoredResponse


async def one(log: SqliteSagaLog) -> None:
    op, _ = await log.start("bench", uuid.uuid4().hex, "fp", "REF", "bench", 15)
    for step in ("a", "b", "c"):
        await log.step(op.id, step, StepState.INTENT, intent={"reference": "REF"})
        await log.step(op.id, step, StepState.DONE, result={"id": step})
    await log.finish(op.id, OpState.DONE, StoredResponse(201, {"id": op.id}))


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = SqliteSagaLog(Path(tmp) / "sagas.db")
        await log.open()
        for _ in range(20):
            await one(log)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await one(log)
            samples.append((time.perf_counter() - started) * 1000)
        await log.close()
    samples.sort()
    print(
        f"saga log, 3-step operation: median {statistics.median(samples):.2f} ms, "
        f"p95 {samples[int(n * 0.95)]:.2f} ms ({n} operations)"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
