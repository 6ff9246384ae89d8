"""Brute-force limits on the endpoints that check client secrets.

Every attempt counts (not only failures) and the check comes before argon2, so a flood of
guesses can neither find a secret nor burn the gateway's CPU. Keys: the claimed client id and
the source address (behind a proxy, the server must be told to trust X-Forwarded-For).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.oauth.config import TokenEndpointLimits
from gateway.stores.limits_storage import LimitsStorage

NAMESPACE = "oauth-client-auth"


class ClientAuthGuard:
    """Admits or refuses an attempt to authenticate a client."""

    def __init__(self, limits: TokenEndpointLimits, storage: LimitsStorage) -> None:
        self._limiter = MovingWindowRateLimiter(storage.storage)
        self._per_client: RateLimitItem = parse(limits.per_client)
        self._per_address: RateLimitItem = parse(limits.per_address)

    async def admit(self, client_id: str | None, address: str | None) -> float | None:
        """None when admitted, else the seconds to wait (the ``Retry-After``)."""
        checks: list[tuple[RateLimitItem, str, str]] = []
        if address:
            checks.append((self._per_address, "address", address))
        if client_id:
            # per client *and* address: counted under the claimed client id alone, anyone
            # could lock a known client out by failing on its behalf
            checks.append((self._per_client, "client", f"{client_id[:200]}|{address or '-'}"))
        for item, kind, value in checks:
            if not await self._limiter.hit(item, NAMESPACE, kind, value):
                stats = await self._limiter.get_window_stats(item, NAMESPACE, kind, value)
                return max(1.0, math.ceil(stats.reset_time - time.time()))
        return None
