"""The delivery policy's arithmetic: exponential, jittered within bounds, capped, Retry-After."""

from __future__ import annotations

import random

import pytest

from gateway.events.config import DeliveryPolicy
from gateway.events.outbound import parse_retry_after
from gateway.events.policy import backoff_delay, is_permanent, retry_after_of
from gateway.events.signing import SignatureError, sign, verify
from process_apis.subscribers.base import PermanentFailure
from system_apis.errors import BackendRejected, BackendUnavailable


def test_backoff_grows_within_jitter_bounds_and_cap() -> None:
    policy = DeliveryPolicy(base_delay_s=1, multiplier=2, max_delay_s=10)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        delays = [backoff_delay(policy, attempt, rng=rng) for _ in range(200)]
        assert all(1 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
    assert backoff_delay(DeliveryPolicy(base_delay_s=1, jitter=False), 3) == 4


def test_retry_after_is_a_floor_with_its_own_cap() -> None:
    policy = DeliveryPolicy(base_delay_s=1, max_delay_s=10, max_retry_after_s=60)
    assert backoff_delay(policy, 1, retry_after=30) == 30
    assert backoff_delay(policy, 1, retry_after=3600) == 60
    off = DeliveryPolicy(base_delay_s=1, jitter=False, honour_retry_after=False)
    assert backoff_delay(off, 1, retry_after=30) == 1


def test_failure_classification() -> None:
    assert retry_after_of(BackendUnavailable("crm", "busy", retry_after=7)) == 7
    assert retry_after_of(RuntimeError("x")) is None
    assert is_permanent(PermanentFailure("no order id"))
    assert is_permanent(BackendRejected("crm", "bad", upstream_status=400))
    assert not is_permanent(BackendUnavailable("crm", "down"))


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_outbound_signature_round_trip() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(body, "secret-secret-secret", timestamp=1_000)
    verify(body, header, "secret-secret-secret", now=1_100)
    for bad_body, bad_header, now in [
        (body + b" ", header, 1_100),
        (body, header, 2_000),
        (body, "t=1000", 1_100),
        (body, "nonsense", 1_100),
    ]:
        with pytest.raises(SignatureError):
            verify(bad_body, bad_header, "secret-secret-secret", now=now)
