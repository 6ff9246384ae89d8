"""The delivery policy as pure functions: how long to wait, whether to try again at all.

Kept free of I/O so the SQLite and the Redis bus make exactly the same decisions.
"""

from __future__ import annotations

import random

from pydantic import ValidationError

from process_apis.subscribers.base import PermanentFailure
from system_apis.errors import BackendAuthFailed, BackendRejected

from .config import DeliveryPolicy

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    PermanentFailure,
    BackendRejected,
    BackendAuthFailed,
    ValidationError,
)
"""Failures another attempt cannot cure: the event goes to the dead-letter queue at once."""


def backoff_delay(
    policy: DeliveryPolicy,
    failed_attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after attempt ``failed_attempt`` (1-based) failed.

    Exponential from ``base_delay_s`` with full jitter inside [base, exponential] (so two
    attempts are never closer than the base delay), capped at ``max_delay_s``; a subscriber's
    Retry-After, when honoured, is a floor (itself capped at ``max_retry_after_s``).
    """
    growth = policy.multiplier ** (failed_attempt - 1)
    ceiling = min(policy.max_delay_s, policy.base_delay_s * growth)
    floor = min(policy.base_delay_s, policy.max_delay_s)
    if policy.jitter and ceiling > floor:
        delay = (rng or random).uniform(floor, ceiling)
    else:
        delay = ceiling
    if policy.honour_retry_after and retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, policy.max_retry_after_s))
    return delay


def retry_after_of(exc: BaseException) -> float | None:
    """The wait the failing side asked for (``BackendUnavailable.retry_after``, Retry-After)."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PERMANENT_ERRORS)


def describe(exc: BaseException) -> str:
    """One line for attempt logs and the DLQ: the type and message, never a traceback."""
    text = str(exc).strip().replace("\n", " ")
    if len(text) > 500:
        text = text[:497] + "..."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
