"""Request id: accept a caller's well-formed ``X-Request-ID``, else make one; echo it back.

It doubles as the ``trace_id`` of error bodies until a trace id is set by the tracing policy.
The request envelope (``gateway.policies.envelope``) applies it to every request.
"""

from __future__ import annotations

import random
import re

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"^[A-Za-z0-9._:-]{8,128}$")


def request_id(offered: bytes | None) -> bytes:
    """The caller's id when well formed (8-128 of ``A-Za-z0-9._:-``), else a fresh one."""
    if offered and _WELL_FORMED.match(offered):
        return offered
    # 128 random bits, as unique as uuid4: a correlation id needs no cryptographic randomness,
    # and this costs no system call per request (uuid4 reads os.urandom)
    return b"%032x" % _bits(128)


_bits = random.getrandbits  # the module instance: the random module reseeds it in a fork
