"""One deadline for a whole composed view (the 360, a ticket's context).

Each section of a view has its own ``section_timeout_s``, but the view's record of truth (the
CRM contact, the ticket) is fetched with its backend's own timeouts and retries, which add up
to far more than a caller should wait. The view deadline bounds the whole answer: past it the
view is a 504 ``upstream-timeout`` naming the backend it was waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from system_apis.errors import BackendTimeout

__all__ = ["view_deadline"]


@asynccontextmanager
async def view_deadline(deadline_s: float, waiting_for: str) -> AsyncIterator[None]:
    """Raise ``BackendTimeout(waiting_for)`` when the body outlasts ``deadline_s``."""
    scope = asyncio.timeout(deadline_s)
    try:
        async with scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise  # a timeout of a call inside, already a verdict of its own
        raise BackendTimeout(
            waiting_for, f"no answer within the view's deadline of {deadline_s:g} s"
        ) from None
