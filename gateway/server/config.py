"""``gateway.server`` in gateway.yaml: the limits every connection to the gateway is held to.

They act below the ASGI app (in the HTTP protocol, see ``gateway.server.protocols``), where a
client that never finishes its request head or body is otherwise invisible to the app.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


class ServerLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    http: Literal["auto", "httptools", "h11"] = Field(
        "auto", description="HTTP/1.1 parser; auto: httptools when installed, else h11."
    )
    max_header_line_bytes: int = Field(
        16_384, ge=1024, description="Longest request line or header line; longer: 431."
    )
    max_header_bytes: int = Field(
        65_536, ge=1024, description="Whole request head (request line and headers); more: 431."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="From the connection (or a request's first byte) to its complete head.",
    )
    body_min_bytes_per_s: int = Field(
        1024, ge=0, description="Average rate a request body must keep up; 0: no floor."
    )
    body_grace_s: float = Field(
        5.0, gt=0, description="How long a body may arrive slower than the floor at first."
    )
    keep_alive_s: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections per worker; above it new ones get 503."
    )
    shutdown_grace_s: float = Field(
        10.0,
        gt=0,
        description="After SIGTERM/SIGINT every process `trellis run` started is gone within "
        "this long: requests in flight finish first, then anything left is killed.",
    )
    shutdown_close_s: float = Field(
        3.0,
        gt=0,
        description="The part of the grace kept for closing the app (stores, Redis, event bus) "
        "after the requests in flight; they get the rest.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_HOSTS),
        description="Host header values served (`*.example.com` matches subdomains, `*` any); "
        "the configured gateway.host is added. Others: 400.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServerLimits:
        if self.max_header_line_bytes > self.max_header_bytes:
            raise ValueError("max_header_line_bytes must not exceed max_header_bytes")
        if self.shutdown_close_s >= self.shutdown_grace_s:
            raise ValueError("shutdown_close_s must be less than shutdown_grace_s")
        return self

    @property
    def drain_s(self) -> float:
        """How long requests in flight may take to finish after a stop signal."""
        return self.shutdown_grace_s - self.shutdown_close_s

    def hosts(self, bind_host: str) -> list[str]:
        """The allowed hosts with the address the gateway listens on (unless a wildcard)."""
        hosts = list(self.allowed_hosts)
        if bind_host not in ("", "0.0.0.0", "::") and bind_host not in hosts:  # noqa: S104
            hosts.append(bind_host)
        return hosts
