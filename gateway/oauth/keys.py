"""This gateway's signing keys: loaded from PEM files and config, several at once for rotation.

New tokens are signed by one key (``signing_kid``, else the greatest kid, so date-named files
rotate by adding a newer file); every configured key still verifies, so tokens signed by an
older key stay valid until that key is removed.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, KeyParameters, RSAKey

from gateway.oauth.config import OAuthConfig
from gateway.stores.private_files import private_dir, private_file

_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class KeyConfigError(ValueError):
    """The signing keys cannot be used; the message names the file or kid."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    key: ECKey | RSAKey


@dataclass(frozen=True, slots=True)
class LocalKeys:
    """The verification keys by kid and the one key that signs new tokens."""

    by_kid: dict[str, SigningKey]
    signing: SigningKey
    algorithms: frozenset[str] = field(default_factory=frozenset)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document (never a private member)."""
        return {
            "keys": [
                k.key.as_dict(private=False, kid=k.kid, alg=k.alg, use="sig")
                for k in sorted(self.by_kid.values(), key=lambda k: k.kid)
            ]
        }


def _import_pem(pem: bytes, kid: str, allowed: frozenset[str]) -> SigningKey:
    parameters: KeyParameters = {"kid": kid, "use": "sig"}
    try:
        raw = serialization.load_pem_private_key(pem, password=None)
    except Exception as exc:  # cryptography raises several types for a bad PEM
        raise KeyConfigError(f"signing key {kid!r}: not an unencrypted PEM private key") from exc
    key: ECKey | RSAKey
    if isinstance(raw, rsa.RSAPrivateKey):
        if raw.key_size < 2048:
            raise KeyConfigError(f"signing key {kid!r}: RSA keys need at least 2048 bits")
        key, alg = RSAKey.import_key(raw, parameters), "RS256"
    elif isinstance(raw, ec.EllipticCurvePrivateKey):
        key = ECKey.import_key(raw, parameters)
        alg = _EC_ALGORITHMS.get(key.curve_name, "")
    else:
        raise KeyConfigError(f"signing key {kid!r}: only RSA and EC keys are supported")
    if alg not in allowed:
        raise KeyConfigError(f"signing key {kid!r}: algorithm {alg or '?'} is not allowed")
    return SigningKey(kid, alg, key)


def _generate(keys_dir: Path, algorithm: str) -> None:
    """Create one private key file (0600) unless another process just did (file lock)."""
    private_dir(keys_dir)
    with open(private_file(keys_dir / ".generate.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(keys_dir.glob("*.pem")):
            return
        kid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        key: ECKey | RSAKey = (
            ECKey.generate_key("P-256") if algorithm == "ES256" else RSAKey.generate_key(3072)
        )
        path = keys_dir / f"{kid}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.as_pem(private=True))


def load_local_keys(config: OAuthConfig) -> LocalKeys:
    """Read keys_dir and inline keys (blocking: call from a worker thread at startup)."""
    allowed = frozenset(config.algorithms)
    keys_dir = config.keys_dir
    if config.generate_if_missing and not config.keys and not any(keys_dir.glob("*.pem")):
        _generate(keys_dir, config.generate_algorithm)
    by_kid: dict[str, SigningKey] = {}
    for path in sorted(keys_dir.glob("*.pem")) if keys_dir.is_dir() else []:
        by_kid[path.stem] = _import_pem(path.read_bytes(), path.stem, allowed)
    for inline in config.keys:
        if inline.kid in by_kid:
            raise KeyConfigError(f"signing key {inline.kid!r} is configured twice")
        by_kid[inline.kid] = _import_pem(
            inline.pem.get_secret_value().encode(), inline.kid, allowed
        )
    if not by_kid:
        raise KeyConfigError(
            f"no signing keys: put a PEM private key in {keys_dir}/ (kid = file name), "
            "configure oauth.keys, or set oauth.generate_if_missing for the sandbox"
        )
    signing_kid = config.signing_kid or max(by_kid)
    if signing_kid not in by_kid:
        raise KeyConfigError(f"signing_kid {signing_kid!r} is not among the configured keys")
    return LocalKeys(by_kid, by_kid[signing_kid], frozenset(k.alg for k in by_kid.values()))
