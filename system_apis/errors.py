"""Typed backend failures. Each names its backend; the gateway turns them into problem+json.

502 bad upstream data, 503 backend unavailable or circuit open, 504 upstream timeout; a 4xx the
vendor gave for our request keeps a 4xx meaning (not found, conflict, rejected).
``problem_type`` is the slug of the problem kind the gateway answers with (its registry of
kinds, ``gateway.problems``, gives the type URI and title; a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class InvalidInput(Exception):
    """The caller's input is wrong: 400 unreadable, 415 not JSON, else 422 with field paths.

    Raised before any backend call, so it never counts against a backend's circuit breaker.
    """

    def __init__(self, detail: str, errors: Sequence[dict[str, Any]] = (), status: int = 422):
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.status = status


class BackendError(Exception):
    """Base of every failure a system API raises."""

    status: int = 502
    problem_type: str = "bad-gateway"

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend}: {detail}")
        self.backend = backend
        self.detail = detail
        self.vendor_body: object = None
        """The vendor's parsed error body, for clients that read structured fields from it."""


class BadBackendData(BackendError):
    """The backend answered, but with something we cannot map (garbage, missing field...)."""

    status = 502
    problem_type = "bad-upstream-data"

    def __init__(
        self, backend: str, detail: str, *, record: str | None = None, field: str | None = None
    ) -> None:
        where = ", ".join(
            p
            for p in (f"record {record}" if record else "", f"field {field}" if field else "")
            if p
        )
        super().__init__(backend, f"{detail} ({where})" if where else detail)
        self.record = record
        self.field = field


class BackendUnavailable(BackendError):
    """Connection refused or reset, 5xx after retries, or bulkhead full."""

    status = 503
    problem_type = "backend-unavailable"

    def __init__(self, backend: str, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(backend, detail)
        self.retry_after = retry_after


class Saturated(BackendUnavailable):
    """Our own limit on calls to this backend (bulkhead, outbound pacer) refused the call.

    Not the backend's failure: a burst from one caller fills these, so it never counts
    against the circuit breaker every caller shares.
    """

    title = "Backend busy"


class CircuitOpen(BackendUnavailable):
    """The breaker is open: we do not even try."""

    problem_type = "circuit-open"


class BackendTimeout(BackendError):
    status = 504
    problem_type = "upstream-timeout"


class BackendNotFound(BackendError):
    status = 404
    problem_type = "not-found"


class BackendConflict(BackendError):
    status = 409
    problem_type = "conflict"


class BackendAuthFailed(BackendError):
    """The backend refused our own credentials: our misconfiguration, never the caller's fault."""

    status = 502
    problem_type = "backend-auth-failed"


class BackendRejected(BackendError):
    """The backend refused our request as invalid (a 4xx other than 404/409/429)."""

    status = 422
    problem_type = "backend-rejected"

    def __init__(self, backend: str, detail: str, *, upstream_status: int) -> None:
        super().__init__(backend, detail)
        self.upstream_status = upstream_status
