"""Subscriptions: who gets which event, and one attempt at handing it over.

A subscription is a process-API subscriber (bound to the system API clients) or a partner's
outbound webhook; the bus treats both alike, so they share retry, backoff and dead letters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from process_apis.ports import DomainEvent
from process_apis.subscribers.base import Subscriber
from system_apis.registry import SystemApis

from .config import DeliveryPolicy, EventsConfig
from .policy import describe, is_permanent, retry_after_of

EventHandler = Callable[[DomainEvent], Awaitable[None]]

_propagator = TraceContextTextMapPropagator()


@dataclass(frozen=True, slots=True)
class Subscription:
    name: str
    event_types: frozenset[str]
    handler: EventHandler
    policy: DeliveryPolicy

    def wants(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types


@dataclass(frozen=True, slots=True)
class AttemptResult:
    ok: bool
    started_at: float
    finished_at: float
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False


def bind_subscribers(
    subscribers: Mapping[str, Subscriber], systems: SystemApis, config: EventsConfig
) -> list[Subscription]:
    """Process-API subscribers with the clients they call and their configured policy."""
    out = []
    for name, sub in subscribers.items():
        switch = config.subscribers.get(name)
        if switch is not None and not switch.enabled:
            continue

        def bound(event: DomainEvent, handle: Subscriber = sub) -> Awaitable[None]:
            return handle.handle(event, systems)

        out.append(Subscription(name, sub.event_types, bound, config.policy_for(name)))
    return out


def unknown_subscribers(config: EventsConfig, known: Iterable[str]) -> list[str]:
    """Subscriber names in config that no code defines (a typo would silently do nothing)."""
    return sorted(set(config.subscribers) - set(known))


def events_tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """The tracer of delivery spans (the global provider unless the gateway passes its own)."""
    return trace.get_tracer("trellis.events", tracer_provider=provider)


async def attempt(
    subscription: Subscription, event: DomainEvent, n: int, tracer: trace.Tracer
) -> AttemptResult:
    """Run the handler once, under a timeout, in a span whose parent is the event's cause."""
    carrier = {
        k: v for k, v in (("traceparent", event.traceparent), ("tracestate", event.tracestate)) if v
    }
    parent = _propagator.extract(carrier)
    started = time.time()
    with tracer.start_as_current_span(
        f"{event.type} deliver {subscription.name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "trellis",
            "messaging.operation.type": "process",
            "messaging.message.id": event.id,
            "messaging.destination.name": event.type,
            "messaging.consumer.group.name": subscription.name,
            "trellis.delivery.attempt": n,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            async with asyncio.timeout(subscription.policy.attempt_timeout_s):
                await subscription.handler(event)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            error = f"TimeoutError: no answer within {subscription.policy.attempt_timeout_s}s"
            span.set_status(Status(StatusCode.ERROR, error))
            return AttemptResult(False, started, time.time(), error)
        except Exception as exc:  # any failure of the subscriber is the policy's business
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, describe(exc)))
            return AttemptResult(
                False, started, time.time(), describe(exc), retry_after_of(exc), is_permanent(exc)
            )
        return AttemptResult(True, started, time.time())
