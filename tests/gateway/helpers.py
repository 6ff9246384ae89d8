"""Build a whole gateway for tests: shipped config pointed at the test sandbox, real tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from argon2 import PasswordHasher

from gateway.settings import Settings, load_settings
from tests import crm_swap

TEST_CLIENTS = {
    # client id -> scopes; secret is "<client-id>-secret" as in the shipped sandbox clients
    "test-system-writer": ["system:read", "system:write"],
    "test-nothing": ["experience:web"],
    "test-no-scope": [],
    "test-everything": [
        "admin",
        "system:read",
        "system:write",
        "process:read",
        "process:write",
        "experience:web",
        "experience:mobile",
        "experience:support",
        "partner",
    ],
}


def test_settings(sandbox_base_port: int, tmp: Path, **overrides: Any) -> Settings:
    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    clients = {
        cid: {"secret_hash": hasher.hash(f"{cid}-secret"), "scopes": scopes, "tier": "internal"}
        for cid, scopes in TEST_CLIENTS.items()
    }
    merged: dict[str, Any] = {
        "gateway": {
            "sandbox": {"base_port": sandbox_base_port},
            "data_dir": str(tmp / "data"),
            # the startup freeze collects the whole heap: in a test process, with every module
            # of the suite loaded, that is a large share of a short test; it has its own test
            "gc": {"freeze_after_startup": False},
        },
        "oauth": {"keys_dir": str(tmp / "keys"), "generate_if_missing": True},
        "clients": clients,
        # edge rate limits are tested on their own (tests/policies); whole-gateway tests that
        # want them pass ratelimit={"enabled": True}
        "ratelimit": {"enabled": False},
    }
    for key, value in overrides.items():
        merged[key] = {**merged.get(key, {}), **value}
    return load_settings(crm_swap.config_dir(), **merged)


async def token(base_url: str, client_id: str, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base_url}/oauth/token",
            data=form,
            headers={"Authorization": aiohttp.encode_basic_auth(client_id, f"{client_id}-secret")},
        ) as r,
    ):
        body = await r.json()
        assert r.status == 200, body
        return str(body["access_token"])


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test
