"""A backend's TLS settings (``tls:`` in backends.yaml) and the SSL context made from them.

A vendor on a private CA needs ``ca_bundle``; one that authenticates its callers by certificate
(SAP, many B2B partners) needs ``client_cert`` and ``client_key``; ``server_name`` is the name
sent in SNI and checked against the certificate when it differs from the URL's host (a backend
reached by IP or through an internal alias). ``verify: false`` turns verification off: the
gateway then warns at start, in ``check-config`` and in ``/readyz``.
"""

from __future__ import annotations

import ssl
from functools import cache, lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator

__all__ = ["TlsConfig", "default_ssl_context", "ssl_context"]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_bundle: FilePath | None = Field(
        None, description="PEM file of the CAs to trust for this backend, instead of the system's."
    )
    client_cert: FilePath | None = Field(
        None, description="PEM client certificate (chain) for mutual TLS; may hold the key too."
    )
    client_key: FilePath | None = Field(None, description="PEM private key of client_cert.")
    client_key_password: SecretStr | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    server_name: str | None = Field(
        None, description="Name sent in SNI and verified, when it is not the URL's host."
    )
    verify: bool = Field(True, description="false: no certificate check (warned everywhere).")

    @model_validator(mode="after")
    def _coherent(self) -> TlsConfig:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        if not self.verify and (self.ca_bundle is not None or self.server_name is not None):
            raise ValueError("verify: false ignores ca_bundle and server_name: remove one")
        try:  # a file that is not PEM, or a key that does not match, is a config error now
            ssl_context(self)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the TLS files: {exc}") from None
        return self


@cache
def default_ssl_context() -> ssl.SSLContext:
    """The system's trust store, hostname checked (made once: loading it is not free)."""
    return ssl.create_default_context()


@lru_cache(maxsize=64)
def ssl_context(tls: TlsConfig | None) -> ssl.SSLContext:
    """The client context for ``tls``, one per distinct config (loading CAs is not free; the
    check at config load makes it, the backend's start reuses it)."""
    if tls is None:
        return default_ssl_context()
    ctx = ssl.create_default_context(cafile=str(tls.ca_bundle) if tls.ca_bundle else None)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    if tls.client_cert is not None:
        password = tls.client_key_password.get_secret_value() if tls.client_key_password else None
        ctx.load_cert_chain(
            tls.client_cert, tls.client_key if tls.client_key else None, password=password
        )
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
