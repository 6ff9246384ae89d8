"""Client authentication at the token, introspection and revocation endpoints.

argon2 verification costs tens of milliseconds of CPU, so it runs in a worker thread. An
unknown client id is verified against a dummy hash with the same parameters, so a caller
cannot tell unknown ids from wrong secrets by timing; argon2 compares digests in constant time.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from gateway.oauth.config import ClientConfig


@dataclass(frozen=True, slots=True)
class PresentedCredentials:
    """What the caller sent: ``client_secret_basic`` or ``client_secret_post``."""

    client_id: str
    secret: str
    method: str


class MalformedCredentials(ValueError):
    """Credentials sent twice, or an Authorization header that is not valid Basic."""


def presented_credentials(headers: Headers, form: Mapping[str, str]) -> PresentedCredentials | None:
    """The credentials in the request, or None if there are none (RFC 6749 §2.3.1)."""
    authorization = headers.get("authorization", "")
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    if authorization[:6].lower() == "basic ":
        if form_secret is not None:
            raise MalformedCredentials("more than one client authentication method")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise MalformedCredentials("malformed Basic credentials") from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise MalformedCredentials("malformed Basic credentials")
        return PresentedCredentials(unquote_plus(client_id), unquote_plus(secret), "basic")
    if form_id is not None and form_secret is not None:
        return PresentedCredentials(form_id, form_secret, "post")
    return None


class ClientAuthenticator:
    """Checks a client id and secret against the argon2 hashes of ``clients.yaml``."""

    def __init__(self, clients: Mapping[str, ClientConfig]) -> None:
        self._clients = clients
        self._hasher = PasswordHasher()
        self._dummy_hash = ""

    async def start(self) -> None:
        """Hash a random secret with the parameters most clients use (the timing twin)."""
        self._dummy_hash = await run_in_threadpool(self._make_dummy_hash)

    def _make_dummy_hash(self) -> str:
        hashes = [c.secret_hash.get_secret_value() for c in self._clients.values()]
        # The part of the hash before the salt names the algorithm, version and cost.
        prefixes = Counter(h.rsplit("$", 2)[0] for h in hashes).most_common(1)
        params = RFC_9106_LOW_MEMORY
        if prefixes:
            sample = next(h for h in hashes if h.startswith(prefixes[0][0] + "$"))
            params = extract_parameters(sample)
        hasher = PasswordHasher.from_parameters(params)
        return hasher.hash(secrets.token_urlsafe(16))

    async def authenticate(self, credentials: PresentedCredentials) -> ClientConfig | None:
        """The client's config if the secret matches, else None (same cost either way)."""
        client = self._clients.get(credentials.client_id)
        stored = client.secret_hash.get_secret_value() if client else self._dummy_hash
        ok = await run_in_threadpool(self._verify, stored, credentials.secret)
        return client if ok and client is not None else None

    def _verify(self, stored: str, secret: str) -> bool:
        try:
            return self._hasher.verify(stored, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def claimed_client_id(headers: Headers, form: Mapping[str, str]) -> str | None:
    """The client id a request claims, before any check (the brute-force limit's key)."""
    try:
        credentials = presented_credentials(headers, form)
    except MalformedCredentials:
        return None
    return credentials.client_id if credentials else form.get("client_id")
