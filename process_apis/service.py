"""The process layer's handle on the world: the system API clients and the operation store.

Views are built before the gateway's lifespan opens the store, so the store is attached later
(``attach``); using it before that is a programming error, reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from system_apis.roles import Systems

from .durable import DurableConfig
from .ports import OperationStore, SagaLog

__all__ = ["ProcessApis"]


@dataclass(slots=True)
class ProcessApis:
    systems: Systems
    section_timeout_s: float = 3.0
    """How long a composite view waits for one non-critical backend before it counts as down."""
    view_deadline_s: float = 5.0
    """How long a composite view waits in all, its record of truth included (``deadline.py``)."""
    idempotency_ttl_s: float = 86_400.0
    durable: DurableConfig = field(default_factory=DurableConfig)
    _store: OperationStore | None = None
    _saga_log: SagaLog | None = None

    def attach(self, store: OperationStore | None, saga_log: SagaLog | None = None) -> None:
        self._store = store
        self._saga_log = saga_log

    @property
    def saga_log(self) -> SagaLog:
        if self._saga_log is None:
            raise RuntimeError("the saga log is not open (gateway lifespan not started)")
        return self._saga_log

    @property
    def store(self) -> OperationStore:
        if self._store is None:
            raise RuntimeError("the operation store is not open (gateway lifespan not started)")
        return self._store
