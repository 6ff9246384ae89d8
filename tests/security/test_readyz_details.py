"""Public readiness says ready or not; which backend is down and each breaker's state are for
admins only (an attacker must not watch a breaker open)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import free_port, serve


async def _readyz(url: str, bearer: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with aiohttp.ClientSession() as s, s.get(url + "/readyz", headers=headers) as r:
        return r.status, await r.json()


async def test_readyz_details_need_admin(sandbox: SandboxThread, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = test_settings(
        sandbox.base_port,
        tmp_path,
        backends={
            "erp": {"sandbox": False, "base_url": dead, "auth": {"kind": "api_key", "key": "x"}}
        },
        gateway={"data_dir": str(tmp_path / "data"), "readiness": {"required_backends": ["erp"]}},
    )
    async with serve(create_app(settings)) as url:
        status, body = await _readyz(url, None)
        assert (status, body) == (503, {"status": "not ready"})

        status, body = await _readyz(url, await token(url, "test-nothing"))
        assert (status, body) == (503, {"status": "not ready"})

        status, body = await _readyz(url, "not-a-valid-token")
        assert (status, body) == (503, {"status": "not ready"})

        status, body = await _readyz(url, await token(url, "test-everything"))
        assert status == 503
        assert body["status"] == "not ready"
        assert "erp" in body["backends"]  # type: ignore[operator]
        assert any(str(r).startswith("erp:") for r in body["reasons"])  # type: ignore[attr-defined]
