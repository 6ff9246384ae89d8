"""What the saga log adds to a durable operation: a 3-step operation recorded in the log
(start, intent and outcome of each step, finish), with no backend calls, so the number is the
log's own cost, on either store.

``python -m bench.saga_log [n] [postgresql://...]``: without a URL the SQLite log in a temp
dir; with one, the PostgreSQL log in a schema of its own, created and dropped by the run.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from gateway.stores.saga_postgres import PostgresSagaLog
from gateway.stores.saga_sqlite import SqliteSagaLog
from process_apis.ports import OpState, StepState, StoredResponse

Log = SqliteSagaLog | PostgresSagaLog


async def one(log: Log) -> None:
    op, _ = await log.start("bench", uuid.uuid4().hex, "fp", "REF", "bench", 15)
    for step in ("a", "b", "c"):
        await log.step(op.id, step, StepState.INTENT, intent={"reference": "REF"})
        await log.step(op.id, step, StepState.DONE, result={"id": step})
    await log.finish(op.id, OpState.DONE, StoredResponse(201, {"id": op.id}))


@asynccontextmanager
async def opened(url: str | None) -> AsyncIterator[Log]:
    if url is None:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SqliteSagaLog(Path(tmp) / "sagas.db")
            await sqlite.open()
            try:
                yield sqlite
            finally:
                await sqlite.close()
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url, timeout=5)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in url else "?"
        postgres = PostgresSagaLog(f"{url}{sep}search_path={schema}")
        await postgres.open()
        try:
            yield postgres
        finally:
            await postgres.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def main(n: int, url: str | None) -> None:
    async with opened(url) as log:
        for _ in range(20):
            await one(log)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await one(log)
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    store = "PostgreSQL" if url else "SQLite"
    print(
        f"saga log ({store}), 3-step operation (8 records): "
        f"median {statistics.median(samples):.2f} ms, "
        f"p95 {samples[int(n * 0.95)]:.2f} ms ({n} operations)"
    )


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 300,
            sys.argv[2] if len(sys.argv) > 2 else None,
        )
    )
