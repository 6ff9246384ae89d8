"""A system API's problem+json names the configured instance (``crm-eu``), never the vendor:
an id refused by the connector's own syntax check, the vendor's 404 and bad data alike."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.app import create_app
from system_apis.errors import BackendNotFound, BadBackendData
from system_apis.instance_errors import name_instance, relabel
from system_apis.sandbox.hubspot_crm import TOKEN
from system_apis.sandbox.server import make_backend_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import free_port, serve


async def get(url: str, bearer: str) -> tuple[int, str, dict[str, object]]:
    headers = {"Authorization": f"Bearer {bearer}"}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, r.headers["Content-Type"], await r.json(content_type=None)


def test_relabel_names_the_instance_in_the_error_and_its_message() -> None:
    exc = relabel(BadBackendData("hubspot-crm", "not a number", record="7", field="amount"), "eu")
    assert exc.backend == "eu" and str(exc) == "eu: not a number (record 7, field amount)"


async def test_a_client_method_and_iterator_raise_with_the_instance_name() -> None:
    class Vendor:
        async def one(self) -> None:
            raise BackendNotFound("vendor", "no record '1'")

        async def many(self):  # type: ignore[no-untyped-def]
            yield 1
            raise BackendNotFound("vendor", "gone")

    client = name_instance(Vendor(), "crm-eu")
    try:
        await client.one()
    except BackendNotFound as exc:
        assert exc.backend == "crm-eu"
    else:
        raise AssertionError("no error")
    try:
        _ = [x async for x in client.many()]
    except BackendNotFound as exc:
        assert exc.backend == "crm-eu"
    else:
        raise AssertionError("no error")


async def test_problems_of_a_hubspot_instance_name_it(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    runner = web.AppRunner(make_backend_app("crm-eu", connector="hubspot-crm"), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    crm_eu = {
        "connector": "hubspot-crm",
        "sandbox": True,
        "sandbox_port": port,
        "auth": {"kind": "api_key", "header": "Authorization", "prefix": "Bearer ", "key": TOKEN},
        "retry": {"max_attempts": 1},
    }
    try:
        settings = test_settings(sandbox.base_port, tmp_path, backends={"crm-eu": crm_eu})
        app = create_app(settings)
        async with serve(app) as url:
            bearer = await token(url, "test-system-writer")
            base = f"{url}/system/v1/crm-eu"
            status, _, body = await get(f"{base}/contacts?limit=2", bearer)
            assert status == 200 and len(body["items"]) == 2, body  # type: ignore[arg-type]
            for path in ("/contacts/not-an-id", "/contacts/999999999", "/opportunities/1x"):
                status, ctype, body = await get(base + path, bearer)
                assert status == 404 and ctype.startswith("application/problem+json"), body
                assert body["backend"] == "crm-eu", body
                assert "hubspot" not in str(body).lower(), body
    finally:
        await runner.cleanup()
