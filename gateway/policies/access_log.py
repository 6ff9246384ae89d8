"""Access-log policy: one structured line per request on the ``trellis.access`` logger.

The line carries what an operator correlates on (request id, trace id, client id) and what
they aggregate on (route template, status, duration, bytes). It goes through the same JSON
formatter and redaction as every ``trellis.*`` logger; the formatter adds the time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.policies.redaction import redact_text
from gateway.policies.routing import route_template
from gateway.principal import Principal, principal_of

ACCESS_LOGGER = "trellis.access"

_line_sink: Callable[[str], None] | None = None


def set_line_sink(sink: Callable[[str], None] | None) -> None:
    """Where ready-made JSON access lines go (the log writer's queue); None: use logging."""
    global _line_sink
    _line_sink = sink


_second: list[Any] = [-1, ""]  # the last whole second rendered, and its text


def _now_iso() -> str:
    """UTC time with milliseconds; the seconds part is formatted once per second."""
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


class LogsConfig(BaseModel):
    """How ``trellis.*`` loggers write: JSON lines, redacted, and whether requests are logged."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "text"] = Field("json", description="text is for a terminal.")
    access_log: bool = True
    redact: bool = Field(True, description="Only switch off to debug on a private machine.")
    redact_keys: list[str] = Field(
        default_factory=list,
        description="Extra key fragments whose values are redacted, besides password, secret...",
    )
    stream: Literal["stderr", "stdout"] = "stderr"


def _safe_client_id(principal: Principal | None) -> str | None:
    """Our client ids are safe; an external issuer's subject may be an email: redact it."""
    if principal is None:
        return None
    cid = principal.client_id
    return redact_text(cid) if "@" in cid else cid


class AccessLogMiddleware:
    """Writes the access line once the response is complete (or the app failed)."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        status = 0
        sent = 0

        async def send_and_count(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_count)
        except BaseException:
            if status == 0:
                status = 500
            raise
        finally:
            duration_ms = (time.perf_counter() - started) * 1000.0
            principal = principal_of(scope)
            route = route_template(scope)
            method = scope["method"]
            sink = _line_sink
            if sink is not None and self.log.isEnabledFor(logging.INFO):
                sink(
                    orjson.dumps(
                        {
                            "time": _now_iso(),
                            "level": "info",
                            "logger": ACCESS_LOGGER,
                            "message": f"{method} {route} {status}",
                            "request_id": scope.get("trellis.request_id"),
                            "trace_id": scope.get("trellis.trace_id"),
                            "client_id": _safe_client_id(principal),
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(duration_ms, 3),
                            "bytes": sent,
                        }
                    ).decode()
                )
            else:
                self._log_record(method, route, status, principal, scope, duration_ms, sent)

    def _log_record(
        self,
        method: str,
        route: str,
        status: int,
        principal: Principal | None,
        scope: Scope,
        duration_ms: float,
        sent: int,
    ) -> None:
        """The slow path, through logging: when no JSON line sink is installed (text logs)."""
        self.log.info(
            "%s %s %s",
            method,
            route,
            status,
            extra={
                "request_id": scope.get("trellis.request_id"),
                "trace_id": scope.get("trellis.trace_id"),
                "client_id": principal.client_id if principal is not None else None,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "bytes": sent,
            },
        )
