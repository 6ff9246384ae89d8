"""Error answers echo at most a bounded prefix of the request path: an 8 KB path must not
come back doubled (it used to be in both ``detail`` and ``instance``)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.app import create_app
from gateway.problems import ECHOED_PATH_CHARS
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings
from tests.servers import serve


async def test_not_found_echoes_a_bounded_prefix(sandbox: SandboxThread, tmp_path: Path) -> None:
    path = "/" + "a" * 8000
    async with (
        serve(create_app(test_settings(sandbox.base_port, tmp_path))) as url,
        aiohttp.ClientSession() as s,
        s.get(url + path) as r,
    ):
        raw = await r.read()
        body = await r.json(content_type=None)
    assert r.status == 404
    assert body["type"] == "/problems/not-found"
    assert len(raw) < ECHOED_PATH_CHARS + 1024
    assert body["instance"] == path[:ECHOED_PATH_CHARS] + "..."
    assert "a" * 300 not in raw.decode()
