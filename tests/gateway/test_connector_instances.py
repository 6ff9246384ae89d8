"""Two instances of one connector through the gateway over real HTTP: each at its own mount,
with its own client, breaker and credentials; the role is served by the one roles.yaml names."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve


async def get(url: str, bearer: str) -> tuple[int, str, dict[str, object]]:
    headers = {"Authorization": f"Bearer {bearer}"}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, r.headers["Content-Type"], await r.json(content_type=None)


async def test_second_stripe_account_is_its_own_instance(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    second = {
        "connector": "stripe",
        "sandbox": True,
        # the same imitation as billing, reached with another account's key
        "sandbox_port": sandbox.sandbox.ports["billing"],
        "auth": {
            "kind": "api_key",
            "header": "Authorization",
            "prefix": "Bearer ",
            "key": "sk_test_not_this_sandbox",
        },
        "retry": {"max_attempts": 1},
    }
    settings = test_settings(sandbox.base_port, tmp_path, backends={"billing-us": second})
    assert settings.role_instances()["billing"] == "billing"
    app = create_app(settings)
    systems = app.systems  # type: ignore[attr-defined]
    eu, us = systems.instances["billing"], systems.instances["billing-us"]
    assert eu is not us and eu.breaker is not us.breaker
    assert systems.billing is eu  # roles.yaml: billing -> billing
    assert us.name == "billing-us"
    async with serve(app) as url:
        bearer = await token(url, "test-system-writer")
        status, _, body = await get(f"{url}/system/v1/billing/customers?limit=1", bearer)
        assert status == 200, body
        assert len(body["items"]) == 1  # type: ignore[arg-type]
        # the other account's key is refused by the vendor: that instance's problem alone
        status, ctype, body = await get(f"{url}/system/v1/billing-us/customers?limit=1", bearer)
        assert status >= 500 and ctype.startswith("application/problem+json"), body
        assert "billing-us" in str(body)
        status, _, body = await get(f"{url}/system/v1/billing/customers?limit=1", bearer)
        assert status == 200, body
