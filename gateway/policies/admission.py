"""Admission: at most ``max_in_flight`` requests in one worker; the excess gets a fast 503.

Past its peak a worker that keeps accepting work only makes every request slower: the event
loop shares its time among more and more of them, each waits longer for the backends it holds
connections to, and clients time out on requests the gateway still finishes (a timeout storm).
Here a worker holds a bounded number of requests; one more is answered at once with a
``503`` problem and ``Retry-After``, without authentication, routing or a backend call, so the
admitted requests keep the latency of a worker at its limit and the excess costs a fraction
of a request. There is no wait queue: a queued request's wait adds to its latency, and the
client's retry after ``Retry-After`` is the queue.

It is the outermost layer (around the request envelope): a refusal is a pre-rendered response
and a counter increment, with no span, request id or access-log line (at several times the
peak a log line per refusal would be a log flood on demand). Refusals are counted in
``rejected`` (``trellis_admission_rejections_total`` in /metrics), and the most requests held
at once since start in ``peak``. Paths in ``exempt_paths`` (health and readiness, metrics)
are admitted even at the limit, so a worker at its limit still answers its probes.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.problems import PROBLEM_JSON, PROBLEM_TYPES

OVERLOADED = PROBLEM_TYPES["overloaded"]


class AdmissionConfig(BaseModel):
    """``gateway.yaml``'s ``admission``: the per-worker concurrency limit."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_in_flight: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Requests one worker holds at once; one more is answered 503 at once. "
        "About peak requests/s x the p99 latency of healthy traffic, with headroom.",
    )
    retry_after_s: int = Field(
        1, ge=0, le=3600, description="Retry-After of the 503: when a client may try again."
    )
    exempt_paths: list[str] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/metrics"],
        description="Exact paths admitted even at the limit (probes and scrapes).",
    )

    @field_validator("exempt_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} must start with '/'")
        return value


def _overloaded(retry_after_s: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The 503's two ASGI messages, rendered once."""
    body = orjson.dumps(
        {
            "type": OVERLOADED.uri,
            "title": OVERLOADED.title,
            "status": 503,
            "detail": "The gateway is at its limit of requests in progress; "
            f"retry after {retry_after_s} s.",
            "retry_after_s": retry_after_s,
        }
    )
    start = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after_s).encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


async def _unplaced(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("AdmissionLimit.wrap(app) places the limit around its app first")


class AdmissionLimit:
    """Pure ASGI; outermost. ``in_flight``: requests held now; ``peak``: the most held at
    once; ``rejected``: requests answered 503. Built before its app: ``wrap`` places it."""

    def __init__(self, config: AdmissionConfig, app: ASGIApp = _unplaced) -> None:
        self.config = config
        self.app = app
        self.limit = config.max_in_flight
        self.exempt = frozenset(config.exempt_paths)
        self.in_flight = 0
        self.peak = 0
        self.rejected = 0
        self._start, self._body = _overloaded(config.retry_after_s)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind this limit (``app`` itself when the limit is disabled)."""
        if not self.config.enabled:
            return app
        self.app = app
        return self

    def stats(self) -> dict[str, int]:
        """Refusals by reason, for ``trellis_admission_rejections_total``."""
        return {"in_flight": self.rejected}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan (held for the app's life) and websockets
            await self.app(scope, receive, send)
            return
        held = self.in_flight
        if held >= self.limit and scope["path"] not in self.exempt:
            self.rejected += 1
            # copies: a server may add to the messages it is given
            await send({**self._start, "headers": list(self._start["headers"])})
            await send(dict(self._body))
            return
        self.in_flight = held = held + 1
        if held > self.peak:
            self.peak = held
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
