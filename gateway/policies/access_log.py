"""Access-log policy: one structured line per request on the ``trellis.access`` logger.

The line carries what an operator correlates on (request id, trace id, client id, the
client's address after the trusted-proxy rule) and what they aggregate on (route template,
status, duration, bytes). On the OAuth endpoints, where no token names the caller, the client
id is the one the request claimed, so password guesses can be traced to a source. It goes
through the same JSON formatter and redaction as every ``trellis.*`` logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from gateway.policies.redaction import redact_text
from gateway.policies.scope_keys import CLAIMED_CLIENT_KEY, REQUEST_ID_KEY, TRACE_ID_KEY
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


def _safe_client_id(principal: Principal | None, scope: Scope) -> str | None:
    """Our client ids are safe; an external issuer's subject (or a claimed id) may be an
    email: redact it."""
    cid: str | None = (
        principal.client_id if principal is not None else scope.get(CLAIMED_CLIENT_KEY)
    )
    if cid is None:
        return None
    return redact_text(cid) if "@" in cid else cid


def _address(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


class AccessLog:
    """Writes the access line of a request once its response is complete (or the app failed)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    def enabled(self) -> bool:
        return self.log.isEnabledFor(logging.INFO)

    def write(self, scope: Scope, route: str, status: int, duration_ms: float, sent: int) -> None:
        principal = principal_of(scope)
        method = scope["method"]
        sink = _line_sink
        if sink is not None:
            sink(
                orjson.dumps(
                    {
                        "time": _now_iso(),
                        "level": "info",
                        "logger": ACCESS_LOGGER,
                        "message": f"{method} {route} {status}",
                        "request_id": scope.get(REQUEST_ID_KEY),
                        "trace_id": scope.get(TRACE_ID_KEY),
                        "client_id": _safe_client_id(principal, scope),
                        "client": _address(scope),
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
                "request_id": scope.get(REQUEST_ID_KEY),
                "trace_id": scope.get(TRACE_ID_KEY),
                "client_id": _safe_client_id(principal, scope),
                "client": _address(scope),
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "bytes": sent,
            },
        )
