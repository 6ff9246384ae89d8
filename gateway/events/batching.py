"""Group commit: what concurrent callers want written is written together, in one transaction.

A caller hands its item to ``GroupCommit.submit`` and waits; one flusher task takes every item
queued so far, writes them with one call of ``flush`` (one SQLite transaction, one Redis
MULTI), and answers each caller with its own result. While that write runs, new items queue up
for the next one, so batches grow with the load and an idle caller waits for no timer. A caller
still returns only after its item is durable, as with one transaction per call.

``flush`` answers one result per item, in order, or an exception for an item that failed; if it
raises as a whole, every item of that batch gets the exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

Flush = Callable[[Sequence[I]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[I, R]):
    def __init__(self, flush: Flush[I, R]) -> None:
        self._flush = flush
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # used from a new event loop (CLI, tests): start afresh
            self._loop, self._queue, self._task = loop, [], None
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await fut

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        if self._task is not None and self._loop is asyncio.get_running_loop():
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results: Sequence[R | BaseException] = await self._flush([i for i, _ in batch])
            except Exception as exc:  # handed to every caller of the batch
                results = [exc] * len(batch)
            except BaseException:  # cancelled (the loop ends): so are the callers
                for _, fut in batch:
                    fut.cancel()
                raise
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():  # the caller was cancelled; its item is written all the same
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
