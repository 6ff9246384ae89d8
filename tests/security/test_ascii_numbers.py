"""Numbers read from headers another party writes are ASCII digits only: ``"²".isdigit()`` is
True and ``int("²")`` raises, so an ``isdigit()`` guard lets a crafted value through to a crash
(and ``"٣"`` through as 3)."""

from __future__ import annotations

import pytest

from gateway.events.outbound import parse_retry_after
from gateway.events.signing import SignatureError, sign, verify

NOT_ASCII = ["\u00b2", "\u0663", "\uff11", "1\u00b2"]


@pytest.mark.parametrize("value", NOT_ASCII)
def test_a_subscribers_retry_after_in_other_digits_is_ignored(value: str) -> None:
    assert parse_retry_after(value) is None
    assert parse_retry_after("7") == 7.0


@pytest.mark.parametrize("value", NOT_ASCII)
def test_a_signature_timestamp_in_other_digits_is_malformed(value: str) -> None:
    good = sign(b"{}", "s3cret")
    mac = good.split(",v1=")[1]
    with pytest.raises(SignatureError, match="malformed"):
        verify(b"{}", f"t={value},v1={mac}", "s3cret")
    verify(b"{}", good, "s3cret")
