"""What a store that is down looks like, and what a caller is told.

A store outage (Redis refusing or dropping connections, timing out, loading, read-only after a
failover; SQLite locked past its busy timeout, its disk failing; PostgreSQL unreachable or
timing out) is not a bug of the request: it is answered as a 503 problem
``store-unavailable`` with ``Retry-After``, by the error handlers (``gateway/errors.py``) and
by the token endpoint's brute-force limiter. A Redis command that fails on a pooled connection
gone stale while Redis was away is retried once on a new connection (``REDIS_RETRY`` in
``redis_options.py``), so the first request after Redis returns does not fail.
"""

from __future__ import annotations

import sqlite3

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .postgres import DatabaseUnavailable

STORE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,  # refused, reset, closed; BusyLoadingError is one
    RedisTimeoutError,  # a stalled Redis, past the socket timeout
    ReadOnlyError,  # a replica promoted away from under us
    sqlite3.OperationalError,  # locked past the busy timeout, disk I/O error, cannot open
    DatabaseUnavailable,  # PostgreSQL unreachable, its pool or a statement timing out
)
"""Errors that mean "the store cannot serve now", not "this request is wrong"."""

RETRY_AFTER_S = 1
"""What a client is told to wait: a store back within a second serves its retry."""
