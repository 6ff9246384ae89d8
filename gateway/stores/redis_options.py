"""Connection options every Redis client of the gateway uses.

Without socket timeouts a stalled Redis (accepting, never answering) would hang every request
that touches a shared store; with them the call fails within a second and each store's own
policy applies (fail open/closed for limits, 503 for auth and operations).
"""

from __future__ import annotations

from typing import Any

DEFAULT_PREFIX = "trellis:"
"""Every key the gateway writes to Redis starts with its prefix (``gateway.redis_prefix``), so
deployments, or test runs, that share one Redis database never see each other's data."""

REDIS_TIMEOUTS: dict[str, Any] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "health_check_interval": 30,
}
