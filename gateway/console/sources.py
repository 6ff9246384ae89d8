"""What the console's pages show, read from the objects the gateway already has.

Numbers come from ``GatewayMetrics`` (the series ``/metrics`` renders), breakers, pacers and
bulkheads from the backend clients themselves, events and dead letters through the event
store's admin calls (those ``/admin/v1`` uses), clients from the loaded configuration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.events.admin import AdminStore
from gateway.events.alerts import RaisedAlert
from gateway.events.records import DeadLetter, DeadLetterQuery, DeadLetterStatus, EventSummary
from gateway.oauth.config import ClientConfig
from gateway.policies.metrics import ANONYMOUS
from system_apis.client import BackendClient
from system_apis.resilience import BreakerState

from .history import WINDOWS_S, History, Sample


class Reachability:
    """The backends' health probes, taken at most once per ``max_age_s`` however many
    operators poll, and never two at once."""

    def __init__(
        self, clients: Mapping[str, BackendClient], timeout_s: float, max_age_s: float
    ) -> None:
        self.clients = clients
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.results: dict[str, str | None] = {}
        self.at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> dict[str, str | None]:
        async with self._lock:
            if time.monotonic() - self.at >= self.max_age_s or not self.results:
                names = list(self.clients)
                found = await asyncio.gather(*(self.clients[n].ping(self.timeout_s) for n in names))
                self.results = dict(zip(names, found, strict=True))
                self.at = time.monotonic()
            return dict(self.results)


def _window_dicts(history: History, kind: str, key: str, now: Sample) -> dict[str, Any]:
    return {f"w{w // 60}": history.window(kind, key, w, now).as_dict() for w in WINDOWS_S}


def backend_rows(
    clients: Mapping[str, BackendClient],
    reachability: Mapping[str, str | None],
    history: History,
    now: Sample,
    *,
    series: bool,
) -> list[dict[str, Any]]:
    """One row per backend: reachability, breaker (and when it half-opens), pacing,
    bulkhead, 5 and 60 minute stats, and (``series``) the chart points."""
    calls, errors = now.backend_calls, now.backend_errors
    rows = []
    for name, client in clients.items():
        breaker = client.breaker
        state = breaker.state
        pacer = client.pacer
        pacing = None
        if pacer is not None:
            available = pacer.available()
            pacing = {
                "per_second": pacer.rate,
                "capacity": pacer.capacity,
                "available": round(available, 2),
                "use": round(1.0 - max(0.0, available) / pacer.capacity, 3),
            }
        bulkhead = client.bulkhead
        problem = reachability.get(name)
        row: dict[str, Any] = {
            "name": name,
            "reachable": name in reachability and problem is None,
            "problem": problem,
            "breaker": str(state),
            "half_open_in_s": round(breaker.retry_in(), 1) if state is BreakerState.OPEN else None,
            "pacing": pacing,
            "bulkhead": {"held": bulkhead.held, "limit": bulkhead.limit},
            "attempts_total": calls.get(name, 0.0),
            "errors_total": errors.get(name, 0.0),
            **_window_dicts(history, "backend", name, now),
        }
        if series:
            row["series"] = {f"w{w // 60}": history.series("backend", name, w) for w in WINDOWS_S}
        rows.append(row)
    return rows


def route_rows(history: History, now: Sample) -> list[dict[str, Any]]:
    """The gateway's own traffic by route template, busiest first over the last hour."""
    rows = [
        {"route": route, **_window_dicts(history, "route", route, now)}
        for route in now.request_latency
    ]
    rows.sort(key=lambda r: (-r["w60"]["count"], r["route"]))
    return rows


def refusal_rows(history: History, now: Sample) -> list[dict[str, Any]]:
    """Requests refused with 429, by client id (``anonymous``: no token), all time and over
    the last 5 and 60 minutes."""
    totals = now.refusals
    w5 = history.counts("refusals", 300, now)
    w60 = history.counts("refusals", 3600, now)
    return [
        {"client": c, "total": totals[c], "w5": w5.get(c, 0.0), "w60": w60.get(c, 0.0)}
        for c in sorted(totals, key=lambda c: -totals[c])
    ]


def overview(
    clients: Mapping[str, BackendClient],
    reachability: Mapping[str, str | None],
    history: History,
    limit_rejections: Mapping[str, int],
    *,
    series: bool,
) -> dict[str, Any]:
    now = history.now()
    return {
        "at": now.at,
        "backends": backend_rows(clients, reachability, history, now, series=series),
        "routes": route_rows(history, now),
        "refusals": refusal_rows(history, now),
        "limits": dict(sorted(limit_rejections.items())),
        "in_flight": history.metrics.started - history.metrics.finished,
    }


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventFilter:
    type: str | None = None
    subject: str | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50

    def keeps(self, event: EventSummary) -> bool:
        if self.state and not any(d.state.value == self.state for d in event.deliveries):
            return False
        if self.since and (event.time is None or event.time < self.since):
            return False
        return not (self.until and (event.time is None or event.time > self.until))


async def events(
    store: AdminStore, wants: Callable[[str], list[str]], selected: EventFilter
) -> list[EventSummary]:
    """Recent events through the admin store, then the state and time filters it lacks.

    The store is asked for more than shown when those filters are on (at most 200)."""
    ask = selected.limit if not (selected.state or selected.since or selected.until) else 200
    found = await store.recent_events(selected.type, selected.subject, ask, wants)
    return [e for e in found if selected.keeps(e)][: selected.limit]


async def dead_letters(store: AdminStore, status: DeadLetterStatus | None) -> list[DeadLetter]:
    return await store.dead_letters(DeadLetterQuery(status=status, limit=200))


def alert_rows(history: Sequence[RaisedAlert]) -> list[RaisedAlert]:
    return list(reversed(history))


# --- clients -------------------------------------------------------------------------------


def client_rows(clients: Mapping[str, ClientConfig], history: History) -> list[dict[str, Any]]:
    """Each configured client with its tier and scopes, and its requests in /metrics."""
    now = history.now()
    totals, refused = now.client_requests, now.refusals
    w5 = history.counts("client_requests", 300, now)
    w60 = history.counts("client_requests", 3600, now)
    rows = [
        {
            "id": cid,
            "tier": cfg.tier,
            "scopes": sorted(cfg.scopes),
            "description": cfg.description,
            "total": totals.get(cid, 0.0),
            "w5": w5.get(cid, 0.0),
            "w60": w60.get(cid, 0.0),
            "refused": refused.get(cid, 0.0),
        }
        for cid, cfg in sorted(clients.items())
    ]
    others = sorted(set(totals) - set(clients) - {ANONYMOUS})
    rows.extend(
        {
            "id": cid,
            "tier": "external issuer",
            "scopes": [],
            "description": "",
            "total": totals[cid],
            "w5": w5.get(cid, 0.0),
            "w60": w60.get(cid, 0.0),
            "refused": refused.get(cid, 0.0),
        }
        for cid in others
    )
    return rows
