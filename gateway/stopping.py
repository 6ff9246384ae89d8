"""Ending background tasks at shutdown, in bounded time.

A task that catches a cancellation and carries on (library code can: a loop whose blocking
Redis read or script call is cut off by ``cancel()`` may go round again) keeps an
``await gather(...)`` of cancelled tasks, and with it the app's shutdown, waiting forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_until_done(
    tasks: Iterable[asyncio.Task[Any]], timeout_s: float = 5.0, interval_s: float = 0.1
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them to end, cancelling again every ``interval_s`` those
    still running, for at most ``timeout_s``. Returns the tasks still running then (none,
    unless one ignores every cancellation). Their outcomes are consumed, errors included."""
    tasks = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(interval_s, remaining))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at collection
    return pending
