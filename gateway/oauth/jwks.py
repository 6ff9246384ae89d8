"""An external issuer's JWKS, fetched with aiohttp and cached.

An unknown ``kid`` triggers at most one refetch per ``min_interval`` (single-flight: concurrent
requests wait for the same fetch), so tokens with random kids cannot make the gateway hammer
the identity provider. A failed fetch keeps the keys already known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from joserfc.jwk import ECKey, KeySet, RSAKey

log = logging.getLogger(__name__)


class RemoteKeySet:
    """Public keys of one issuer by kid, refreshed on demand."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        min_interval: float,
        max_age: float,
        timeout: float,
    ) -> None:
        self.url = url
        self._session = session
        self._min_interval = min_interval
        self._max_age = max_age
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._keys: dict[str, ECKey | RSAKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetch_count = 0
        """How many fetches were attempted (observability, and the min-interval tests)."""

    async def get(self, kid: str) -> ECKey | RSAKey | None:
        """The key for ``kid``, refetching the JWKS if it is unknown or stale (rate-limited)."""
        key = self._keys.get(kid)
        if key is not None and not self._stale():
            return key
        async with self._lock:
            # Another request may have fetched while this one waited: check again.
            key = self._keys.get(kid)
            if key is not None and not self._stale():
                return key
            if self._may_fetch():
                await self._fetch()
            return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self._max_age

    def _may_fetch(self) -> bool:
        return self._fetched_at is None or (
            time.monotonic() - self._fetched_at >= self._min_interval
        )

    async def _fetch(self) -> None:
        self.fetch_count += 1
        self._fetched_at = time.monotonic()
        try:
            async with self._session.get(self.url, timeout=self._timeout) as response:
                response.raise_for_status()
                document = await response.json(content_type=None)
            self._keys = _parse_jwks(document)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)


def _parse_jwks(document: Any) -> dict[str, ECKey | RSAKey]:
    """Public RSA/EC signing keys with a kid; anything else in the document is ignored."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, ECKey | RSAKey] = {}
    for item in document["keys"]:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
            continue
        if item.get("use", "sig") != "sig" or item.get("kty") not in ("RSA", "EC"):
            continue
        public = {k: v for k, v in item.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            key = KeySet.import_key_set({"keys": [public]}).keys[0]
        except Exception:  # one malformed key must not hide the others
            log.warning("JWKS key %r ignored: not a usable public key", item["kid"])
            continue
        if isinstance(key, ECKey | RSAKey):
            keys[item["kid"]] = key
    return keys
