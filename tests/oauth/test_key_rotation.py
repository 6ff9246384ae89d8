"""Signing-key rotation: old tokens live while their key is configured, new ones use the newest."""

from __future__ import annotations

from pathlib import Path

from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

from .conftest import RunFactory


def _kid_of(token: str) -> str:
    return str(jws.extract_compact(token.encode()).headers()["kid"])


async def test_rotation_end_to_end(run_gateway: RunFactory, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "2026-01-01.pem").write_bytes(ECKey.generate_key("P-256").as_pem(private=True))
    async with run_gateway(generate_if_missing=False) as gw:
        old = await gw.token("orders-service")
        assert _kid_of(old) == "2026-01-01"
        assert (await gw.get("/orders", old)).status_code == 200

        (keys_dir / "2026-02-01.pem").write_bytes(RSAKey.generate_key(2048).as_pem(private=True))
        await gw.oauth.reload_keys()
        new = await gw.token("orders-service")
        assert _kid_of(new) == "2026-02-01"
        assert jws.extract_compact(new.encode()).headers()["alg"] == "RS256"
        assert (await gw.get("/orders", new)).status_code == 200
        assert (await gw.get("/orders", old)).status_code == 200
        published = {k["kid"] for k in (await gw.get("/.well-known/jwks.json")).json()["keys"]}
        assert published == {"2026-01-01", "2026-02-01"}

        (keys_dir / "2026-01-01.pem").unlink()
        await gw.oauth.reload_keys()
        assert (await gw.get("/orders", old)).status_code == 401
        assert await gw.auth_error(old) == "unknown_key"
        assert (await gw.get("/orders", new)).status_code == 200
        published = {k["kid"] for k in (await gw.get("/.well-known/jwks.json")).json()["keys"]}
        assert published == {"2026-02-01"}


async def test_a_restarted_process_keeps_validating_tokens_of_configured_keys(
    run_gateway: RunFactory,
) -> None:
    async with run_gateway() as first:
        token = await first.token("orders-service")
    async with run_gateway() as second:  # same keys_dir: the generated key is reused
        assert (await second.get("/orders", token)).status_code == 200


async def test_signing_kid_pins_the_signing_key(run_gateway: RunFactory, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    for kid in ("a-old", "b-new"):
        (keys_dir / f"{kid}.pem").write_bytes(ECKey.generate_key("P-256").as_pem(private=True))
    async with run_gateway(signing_kid="a-old") as gw:
        assert _kid_of(await gw.token("orders-service")) == "a-old"
    async with run_gateway() as gw:
        assert _kid_of(await gw.token("orders-service")) == "b-new"
