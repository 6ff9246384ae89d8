"""The bearer middleware answers 503 (never 500) whenever the token cannot be checked, on its
no-await path (the verifier not there yet) as on the awaited one."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from gateway.app import create_app
from gateway.oauth.middleware import BearerMiddleware
from gateway.oauth.verify import TokenVerifier
from gateway.stores.revocations import RedisRevocationStore
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("reached")(scope, receive, send)


def no_verifier() -> TokenVerifier:
    raise RuntimeError("the OAuth component has not started")


async def test_a_verifier_that_cannot_be_had_is_503_with_retry_after() -> None:
    guarded = BearerMiddleware(app, no_verifier, max_token_bytes=8192)
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/", headers={"Authorization": "Bearer abc.def.ghi"})
        assert (r.status_code, r.headers.get("retry-after")) == (503, "1")
        assert r.headers["content-type"] == "application/problem+json"
        # no token at all: nothing to check, the app answers
        assert (await client.get("/")).text == "reached"


@pytest.mark.slow  # two whole gateways, a Redis timeout
async def test_stalled_revocation_store_is_503_with_retry_after(
    sandbox: SandboxThread, tmp_path: Path, silent_redis: str
) -> None:
    """Tokens issued by a healthy gateway; a second one whose revocation store stalls."""
    settings = test_settings(sandbox.base_port, tmp_path)
    async with serve(create_app(settings)) as url:
        bearer = await token(url, "ops-admin")
    app = create_app(settings)
    async with serve(app) as url:
        # swap the revocation store for one on the stalled Redis
        verifier = app.oauth.verifier
        verifier._revocations = RedisRevocationStore(silent_redis)
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                url + "/system/v1/inventory/stock/SKU-0001",
                headers={"Authorization": f"Bearer {bearer}"},
            ) as r,
        ):
            body = await r.json(content_type=None)
            assert r.status == 503, body
            assert r.headers["Retry-After"] == "1"
