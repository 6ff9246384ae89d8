"""The bearer middleware answers 503 (never 500) whenever the token cannot be checked, on its
no-await path (the verifier not there yet) as on the awaited one."""

from __future__ import annotations

import httpx
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from gateway.oauth.middleware import BearerMiddleware
from gateway.oauth.verify import TokenVerifier


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
