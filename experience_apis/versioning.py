"""Path versions and their lifecycle: retired answers 410, deprecated carries its dates.

``Deprecation: @<unix time>`` (RFC 9745), ``Sunset: <HTTP-date>`` (RFC 8594) and a
``Link: <guide>; rel="deprecation"`` tell clients early; a retired version answers every request
410 Gone as problem+json (the gateway's handler renders the ``HTTPException``).
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import VersionPolicy, VersionStatus

__all__ = ["Versioned", "lifecycle_headers"]


def _http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True) if when.tzinfo else format_datetime(when)


def lifecycle_headers(policy: VersionPolicy) -> dict[str, str]:
    """The headers a response of this version carries (none for an active version)."""
    headers: dict[str, str] = {}
    if policy.status is VersionStatus.ACTIVE:
        return headers
    if policy.deprecated_at is not None:
        headers["Deprecation"] = f"@{int(policy.deprecated_at.timestamp())}"
    if policy.sunset is not None:
        headers["Sunset"] = _http_date(policy.sunset)
    if policy.link:
        rel = "deprecation" if policy.status is VersionStatus.DEPRECATED else "sunset"
        headers["Link"] = f'<{policy.link}>; rel="{rel}"'
    return headers


class Versioned:
    """Wraps one channel version's app with its lifecycle policy."""

    def __init__(self, app: ASGIApp, channel: str, version: str, policy: VersionPolicy) -> None:
        self.app = app
        self.channel = channel
        self.version = version
        self.policy = policy
        self.headers = [
            (k.lower().encode(), v.encode()) for k, v in lifecycle_headers(policy).items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.policy.status is VersionStatus.RETIRED:
            raise HTTPException(
                410,
                detail=f"version {self.version} of the {self.channel} experience API is retired",
                headers=lifecycle_headers(self.policy),
            )
        if not self.headers:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
