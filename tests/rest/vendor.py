"""A hand-written JSON REST vendor for the ``rest`` connector's tests, on a real loopback port.

It is written independently of the connector's own sandbox: each paging style and credential
check here follows the usual public conventions (a cursor token in the body, page numbers,
offsets, an RFC 8288 ``Link`` header, a ``next`` URL), so the client is checked against
servers it was not built from.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

PARCELS = [{"ref": f"P-{n:03d}", "kg": n / 10, "meta": {"city": f"City {n}"}} for n in range(1, 12)]
"""Eleven records: pages of 4 give 4, 4, 3."""

SECRET = "s3cret"
SEEN = web.AppKey("seen", list[dict[str, str]])
"""Every request the vendor received: its path and query, and its headers."""


def _window(request: web.Request, start: int) -> tuple[list[dict[str, Any]], int, bool]:
    limit = int(request.query.get("limit", "4"))
    items = PARCELS[start : start + limit]
    return items, limit, start + limit < len(PARCELS)


def vendor_app(credential: str = "none") -> web.Application:
    """Every paging style under its own path; ``credential`` says which one each call needs."""
    tokens: set[str] = set()
    seen: list[dict[str, str]] = []

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append({"path": request.path_qs, **dict(request.headers)})
        if request.path == "/oauth/token":
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        ok = {
            "none": True,
            "api_key": request.headers.get("X-Key") == SECRET,
            "api_key_query": request.query.get("key") == SECRET,
            "bearer": auth == f"Bearer {SECRET}",
            "basic": auth == "Basic " + base64.b64encode(f"me:{SECRET}".encode()).decode(),
            "oauth": auth.removeprefix("Bearer ") in tokens,
        }[credential]
        if not ok:
            return web.json_response({"message": "bad credentials"}, status=401)
        return await handler(request)

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        basic = "Basic " + base64.b64encode(f"cid:{SECRET}".encode()).decode()
        if request.headers.get("Authorization") != basic:
            return web.json_response({"error": "invalid_client"}, status=401)
        assert form["grant_type"] == "client_credentials"
        tokens.add(f"tok-{len(tokens)}")
        return web.json_response({"access_token": f"tok-{len(tokens) - 1}", "expires_in": 60})

    async def by_cursor(request: web.Request) -> web.Response:
        after = request.query.get("after")
        start = 0 if after is None else [p["ref"] for p in PARCELS].index(after) + 1
        items, _, more = _window(request, start)
        return web.json_response(
            {"results": items, "paging": {"next": items[-1]["ref"] if more else None}}
        )

    async def by_page(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        items, _, more = _window(request, (page - 1) * int(request.query.get("limit", "4")))
        return web.json_response({"data": items, "has_more": more})

    async def by_offset(request: web.Request) -> web.Response:
        items, _, _ = _window(request, int(request.query.get("offset", "0")))
        return web.json_response(items)  # no has_more: a short page is the last

    async def by_link(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        limit = int(request.query.get("limit", "4"))
        items, _, more = _window(request, (page - 1) * limit)
        headers = {}
        if more:
            # every parameter echoed, a query credential among them, as vendors' links do
            nxt = str(request.url.update_query(limit=limit, page=page + 1))
            headers["Link"] = f'<{request.url.origin()}/x>; rel="prev", <{nxt}>; rel="next"'
        return web.json_response(items, headers=headers)

    async def by_next_url(request: web.Request) -> web.Response:
        page = int(request.query.get("p", "1"))
        items, _, more = _window(request, (page - 1) * 4)
        nxt = f"/next/parcels?p={page + 1}" if more else None  # relative: to the list's URL
        return web.json_response({"items": items, "links": {"next": nxt}})

    async def elsewhere(request: web.Request) -> web.Response:
        return web.json_response(
            {"items": PARCELS[:1], "links": {"next": "http://attacker.example/steal?p=2"}}
        )

    async def one(request: web.Request) -> web.Response:
        for p in PARCELS:
            if p["ref"] == request.match_info["ref"]:
                return web.json_response({"parcel": p})
        return web.json_response({"message": "no such parcel"}, status=404)

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"parcel": {"ref": "P-001", "kg": "heavy"}})

    app = web.Application(middlewares=[check])
    app[SEEN] = seen
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/cursor/parcels", by_cursor)
    app.router.add_get("/page/parcels", by_page)
    app.router.add_get("/offset/parcels", by_offset)
    app.router.add_get("/link/parcels", by_link)
    app.router.add_get("/next/parcels", by_next_url)
    app.router.add_get("/leaky/parcels", elsewhere)
    app.router.add_get("/parcels/broken", broken)
    app.router.add_get("/parcels/{ref}", one)
    return app


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
