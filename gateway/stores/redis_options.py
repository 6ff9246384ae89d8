"""Connection options every Redis client of the gateway uses.

Without socket timeouts a stalled Redis (accepting, never answering) would hang every request
that touches a shared store; with them the call fails within a second and each store's own
policy applies (fail open/closed for limits, 503 for auth and operations).

A command that fails because its pooled connection was closed (Redis restarted, a proxy or
firewall dropped it while idle) is retried once, at once, on a new connection: the first
request after Redis returns succeeds instead of meeting the stale connection. A timeout is not
retried (a stalled Redis would double the wait), nor is a refused connection more than once
(a Redis that is down is answered within the connect timeout, not after a backoff schedule).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DEFAULT_PREFIX = "trellis:"
"""Every key the gateway writes to Redis starts with its prefix (``gateway.redis_prefix``), so
deployments, or test runs, that share one Redis database never see each other's data."""

REDIS_TIMEOUTS: dict[str, Any] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "health_check_interval": 30,
    # redis-py's public retry options: one immediate retry, on a connection error only
    "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
}
