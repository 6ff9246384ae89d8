"""What process APIs need from the outside, as protocols: the gateway injects the implementations.

Process APIs may not import the gateway (layering), so the durable stores they rely on are
described here and implemented in ``gateway/stores/`` (SQLite embedded, Redis when shared).

The outbox contract between process APIs (writers) and the event bus (reader):
- every ``DomainEvent`` handed to ``OperationStore.commit`` is appended to the outbox in the
  same transaction as the operation's own record (idempotency result, cross-references), so a
  crash between "did the work" and "announced it" loses nothing;
- SQLite: table ``outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
  type TEXT NOT NULL, subject TEXT, time TEXT NOT NULL, event TEXT NOT NULL)`` in
  ``<data_dir>/trellis.db`` (WAL), ``event`` being the CloudEvent JSON;
- Redis: ``XADD <prefix>events * id <event id> type <type> event <CloudEvent JSON>`` inside
  the same MULTI/EXEC as the operation's own keys (``gateway.redis_prefix``, ``trellis:`` by
  default).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

EVENT_SOURCE = "urn:trellis:gateway"


def _current_trace() -> tuple[str | None, str | None]:
    """W3C headers of the active span, so an event's handling joins the trace that caused it."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    parent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    return parent, (ctx.trace_state.to_header() or None) if ctx.trace_state else None


class DomainEvent(BaseModel):
    """A CloudEvents 1.0 event (JSON format), with the W3C trace context of its cause."""

    model_config = ConfigDict(extra="forbid")

    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: f"evt_{uuid.uuid4().hex}")
    source: str = EVENT_SOURCE
    type: str
    subject: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: str = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)
    traceparent: str | None = Field(default_factory=lambda: _current_trace()[0])
    tracestate: str | None = Field(default_factory=lambda: _current_trace()[1])


class BeginState(StrEnum):
    NEW = "new"  # the key is now ours: do the work, then commit or release
    IN_PROGRESS = "in_progress"  # another request with this key is still running
    DONE = "done"  # already completed: replay ``response``
    MISMATCH = "mismatch"  # the key was used with a different request body


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Begin:
    state: BeginState
    response: StoredResponse | None = None


@dataclass(slots=True)
class Outcome:
    """Everything an operation records when it succeeds, written in one transaction."""

    idempotency_key: str | None = None
    response: StoredResponse | None = None
    xrefs: dict[str, dict[str, str]] = field(default_factory=dict)
    """canonical customer id -> {system name: that system's id}. Also used for other links:
    ``order:<order id>`` -> {"inventory.reservation", "billing.invoice", "crm.customer"} and
    ``attempts:<idempotency key>``; a name starting with ``_`` is a state marker (e.g.
    ``_onboarding: incomplete``), not a system, and is not indexed for ``customer_for``."""
    events: list[DomainEvent] = field(default_factory=list)


class OperationStore(Protocol):
    """Idempotency keys, cross-reference ids and the outbox, behind one transactional commit."""

    async def begin(self, key: str, fingerprint: str, ttl_s: float = 86_400) -> Begin:
        """Claim ``key`` for a request whose body hashes to ``fingerprint``."""
        ...

    async def release(self, key: str) -> None:
        """Give up a claimed key (the operation failed and was compensated): a retry may run."""
        ...

    async def commit(self, outcome: Outcome) -> None:
        """Record the operation's result, its cross-references and its events atomically."""
        ...

    async def xrefs(self, customer_id: str) -> dict[str, str]:
        """The customer's id in every system ({} if unknown)."""
        ...

    async def customer_for(self, system: str, system_id: str) -> str | None:
        """The canonical customer id that ``system_id`` of ``system`` belongs to."""
        ...


class OpState(StrEnum):
    """Where a durable operation stands in the saga log."""

    RUNNING = "running"  # a gateway process holds its lease and works on it
    DONE = "done"  # succeeded: ``response`` is the answer every retry gets
    FAILED = "failed"  # failed and fully undone (or nothing to undo): ``response`` is the problem
    RETRYABLE = "retryable"  # failed; its steps are kept and the same request resumes it
    STUCK = "stuck"  # an undo kept failing: an operator decides (``/admin/v1/operations``)


class StepState(StrEnum):
    INTENT = "intent"  # about to call the backend: the outcome is unknown until recorded
    DONE = "done"  # the backend answered; ``result`` holds what undo needs
    FAILED = "failed"  # the backend refused: nothing was made
    UNDONE = "undone"  # compensated
    UNDO_FAILED = "undo_failed"  # compensation failed; retried with backoff, then stuck
    KEPT = "kept"  # cannot be undone (a logged fact): reported, never retried


@dataclass(frozen=True, slots=True)
class StepRecord:
    name: str
    state: StepState
    intent: dict[str, Any] = field(default_factory=dict)
    """What the step sends and the reference it sends it with: enough to look it up later."""
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class OperationRecord:
    id: str
    kind: str  # "order", "onboard"...: selects the undo and lookup handlers on recovery
    key: str  # the idempotency key (scoped by operation and caller)
    fingerprint: str
    state: OpState
    reference: str  # what the backends get: unique per operation, never reused
    owner: str | None
    lease_until: float
    created_at: float
    updated_at: float
    response: StoredResponse | None = None
    detail: str | None = None
    attempts: int = 0
    next_attempt_at: float = 0.0
    steps: tuple[StepRecord, ...] = ()


class SagaLog(Protocol):
    """The durable record of multi-step operations: each step's intent before its call and its
    outcome after, each operation's lease, and its final answer. Any gateway process sharing
    the log can take over an operation whose lease expired (its process died)."""

    async def start(
        self, kind: str, key: str, fingerprint: str, reference: str, owner: str, lease_s: float
    ) -> tuple[OperationRecord, bool]:
        """Create the operation for ``key`` (True), or answer the one that exists (False)."""
        ...

    async def restart(
        self, op_id: str, owner: str, lease_s: float, reference: str | None = None
    ) -> OperationRecord | None:
        """Take a finished operation back into running for another attempt (None while it runs
        or is stuck). Callers restart only what may run again. ``reference`` replaces the one
        the backends got when what it made was undone: it must not be handed back."""
        ...

    async def get(self, op_id: str) -> OperationRecord | None: ...

    async def by_key(self, key: str) -> OperationRecord | None: ...

    async def step(
        self,
        op_id: str,
        name: str,
        state: StepState,
        *,
        intent: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Record a step's intent (before the call) or outcome (after)."""
        ...

    async def renew(self, op_id: str, owner: str, lease_s: float) -> bool:
        """Extend the lease while working; False when another process took the operation."""
        ...

    async def finish(
        self,
        op_id: str,
        state: OpState,
        response: StoredResponse | None,
        detail: str | None = None,
        *,
        retry_at: float = 0.0,
    ) -> None:
        """Record the final (or stuck) state and the answer retries replay; drops the lease."""
        ...

    async def claim_expired(self, owner: str, lease_s: float, limit: int) -> list[OperationRecord]:
        """Running operations whose lease expired, and stuck ones due for another undo
        attempt, now leased to ``owner``."""
        ...

    async def listing(self, state: OpState | None, limit: int) -> list[OperationRecord]: ...

    async def close(self) -> None: ...
