"""Behind single sign-on: a proxy forwards an external issuer's token holding ``admin``, and
the console lets it in without the form (docs/operations.md)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings
from tests.oauth.test_external_issuer import IDP, IDP_AUDIENCE, IdentityProvider
from tests.servers import serve


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    app = web.Application()
    app.router.add_get("/jwks", provider.jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    provider.url = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks"
    yield provider
    await runner.cleanup()


async def test_an_sso_token_with_admin_enters_and_still_needs_csrf(
    sandbox: SandboxThread, idp: IdentityProvider, tmp_path: Path
) -> None:
    kid = idp.add_key()
    issuer = {
        "issuer": IDP,
        "audience": IDP_AUDIENCE,
        "jwks_url": idp.url,
        "algorithms": ["RS256"],
        "scopes_claim": "scp",
        "allowed_scopes": ["admin"],
    }
    settings = test_settings(sandbox.base_port, tmp_path, oauth={"external_issuers": [issuer]})
    admin = {"Authorization": f"Bearer {idp.token(kid, scp=['admin'])}"}
    weak = {"Authorization": f"Bearer {idp.token(kid, scp=['experience:web'])}"}
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(url + "/console", headers=admin, allow_redirects=False) as r:
            page = await r.text()
            assert r.status == 200, page
            assert f"{IDP}#web-app" in page  # the SSO principal, shown as signed in
        async with http.get(url + "/console", headers=weak, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["location"] == "/console/login"
        revoke = url + "/console/clients/revoke"
        async with http.post(revoke, headers=admin, data={"jti": "x"}) as r:
            assert r.status == 403  # a proxy's ambient header is no excuse to skip CSRF
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found
        form = {"jti": "some-jti", "csrf": found.group(1)}
        async with http.post(revoke, headers=admin, data=form) as r:
            assert r.status == 200 and "is revoked" in await r.text()
