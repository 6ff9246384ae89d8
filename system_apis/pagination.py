"""Walking a vendor's pages to the end, whatever its cursor style.

Each client turns its vendor's pagination (``starting_after``, ``page[after]``,
``paging.next.after``...) into ``Page`` objects with an opaque ``next_cursor``; this walks them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from .errors import BadBackendData
from .models import Page

M = TypeVar("M")

_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
"""One link of an RFC 8288 ``Link`` header: its target, then its parameters."""


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of an RFC 8288 Link header, if any."""
    if not header:
        return None
    for match in _LINK.finditer(header):
        for param in match.group(2).split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return match.group(1)
    return None


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
