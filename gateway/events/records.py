"""What the bus records and shows: attempts, delivery states, dead letters, replay outcomes.

The same models serve the admin API, the CLI and both stores, so an operator sees one shape
whichever backend holds the data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def at(ts: float) -> datetime:
    """Unix seconds (how the stores keep time) as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else at(ts)


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a W3C ``traceparent`` (None when absent or malformed)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        try:
            int(parts[1], 16)
        except ValueError:
            return None
        return parts[1]
    return None


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    DISCARDED = "discarded"


class Attempt(Record):
    n: int = Field(description="1-based attempt number within this delivery round.")
    started_at: datetime
    finished_at: datetime | None = None
    ok: bool | None = Field(None, description="None while running (or lost in a crash).")
    error: str | None = None
    retry_after_s: float | None = None


class Delivery(Record):
    subscriber: str
    state: DeliveryState
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None
    dead_letter_id: str | None = None


class EventSummary(Record):
    id: str
    type: str
    subject: str | None = None
    time: datetime | None = None
    source: str | None = None
    trace_id: str | None = None
    deliveries: list[Delivery] = Field(default_factory=list)


class EventList(Record):
    items: list[EventSummary]


class DeadLetterStatus(StrEnum):
    DEAD = "dead"
    REPLAYED = "replayed"
    DISCARDED = "discarded"
    ALREADY_DELIVERED = "already_delivered"


class DeadLetter(Record):
    id: str
    event_id: str
    subscriber: str
    type: str
    subject: str | None = None
    trace_id: str | None = None
    attempts: int
    errors: list[Attempt]
    created_at: datetime
    status: DeadLetterStatus = DeadLetterStatus.DEAD
    reason: str | None = Field(None, description="Why it was discarded.")
    resolved_at: datetime | None = None
    event: dict[str, Any] = Field(description="The CloudEvent as it was published.")


class DeadLetterList(Record):
    items: list[DeadLetter]


class DeadLetterQuery(Record):
    type: str | None = None
    subscriber: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: DeadLetterStatus | None = DeadLetterStatus.DEAD
    limit: int = Field(100, ge=1, le=1000)


class ReplayRequest(Record):
    ids: list[str] = Field(min_length=1, max_length=1000)


class ReplayOutcome(StrEnum):
    REPLAYED = "replayed"
    ALREADY_DELIVERED = "already_delivered"
    NOT_FOUND = "not_found"
    NOT_DEAD = "not_dead"


class ReplayResult(Record):
    id: str
    outcome: ReplayOutcome


class ReplayResults(Record):
    items: list[ReplayResult]


class DiscardRequest(Record):
    reason: str = Field(min_length=1, max_length=1000)
