"""HMAC-SHA256 signatures of outbound webhooks, and their check (for partners and tests).

``Trellis-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`` - the
scheme Stripe made familiar, so a partner's existing verifier needs only a new header name.
The timestamp is signed, so a captured request cannot be replayed later than the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

SIGNATURE_HEADER = "Trellis-Signature"
EVENT_ID_HEADER = "Trellis-Event-Id"
EVENT_TYPE_HEADER = "Trellis-Event-Type"
TIMESTAMP_HEADER = "Trellis-Timestamp"
_UNIX_TIME = re.compile(r"[0-9]{1,12}", re.ASCII)


class SignatureError(ValueError):
    """A ``Trellis-Signature`` is missing, malformed, wrong or outside the tolerance."""


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    payload: bytes, header: str, secret: str, tolerance_s: int = 300, now: float | None = None
) -> None:
    """Raise ``SignatureError`` unless ``header`` signs ``payload`` with ``secret``, recently."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    stamps, macs = fields.get("t", []), fields.get("v1", [])
    if len(stamps) != 1 or not _UNIX_TIME.fullmatch(stamps[0]) or not macs:
        raise SignatureError("malformed signature header")
    t = int(stamps[0])
    expected = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), m.encode()) for m in macs):
        raise SignatureError("signature does not match")
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        raise SignatureError("timestamp outside the tolerance")
