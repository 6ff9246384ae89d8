"""Walking a vendor's pages to the end, whatever its cursor style.

Each client turns its vendor's pagination (``starting_after``, ``page[after]``,
``paging.next.after``...) into ``Page`` objects with an opaque ``next_cursor``; this walks them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from .errors import BadBackendData
from .models import Page

M = TypeVar("M")


async def walk_pages(
    backend: str, fetch: Callable[[str | None], Awaitable[Page[M]]]
) -> AsyncIterator[M]:
    """Every item of every page; a cursor that does not advance is bad data, not a loop."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        if page.next_cursor == cursor:
            raise BadBackendData(backend, "the next-page cursor does not advance", field="cursor")
        cursor = page.next_cursor
