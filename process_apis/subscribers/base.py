"""What a subscriber is: a name, the event types it reacts to, and an idempotent handler.

The event bus (in the gateway) calls ``handle(event, systems)`` at least once per event; the
bus remembers which (subscriber, event id) pairs succeeded, and handlers look before they
write where the backend allows it, so a redelivery never repeats an effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from process_apis.ports import DomainEvent
from system_apis.roles import Systems

Handler = Callable[[DomainEvent, Systems], Awaitable[None]]


class PermanentFailure(Exception):
    """The event cannot be handled however often we try (bad data): dead-letter it at once."""


@dataclass(frozen=True, slots=True)
class Subscriber:
    event_types: frozenset[str]
    handle: Handler
    description: str = ""


def field(data: Mapping[str, Any], *paths: str) -> str | None:
    """The first non-empty string at one of the dotted ``paths`` (events evolve; be lenient)."""
    for path in paths:
        value: Any = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def require(data: Mapping[str, Any], what: str, *paths: str) -> str:
    """Like ``field`` but a missing value is a ``PermanentFailure`` naming what was expected."""
    value = field(data, *paths)
    if value is None:
        raise PermanentFailure(f"event data has no {what} (looked at {', '.join(paths)})")
    return value
