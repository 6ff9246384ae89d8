"""A fast sandbox-style backend: the inventory sandbox's stock route, minus everything else.

Serves ``GET /v1/stock/{sku}`` (``X-Api-Key`` checked, the sandbox's JSON shape) and
``GET /__health`` over HTTP/1.1 keep-alive. It is a bare asyncio protocol on uvloop with the
httptools parser, so that the backend is never what limits a scenario: every gateway in the
benchmark forwards to this same process.

Run: ``python -m bench.backend --port 9300``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from typing import Any, cast

import httptools
import orjson

API_KEY = b"inv-sandbox-key"
STOCK = re.compile(rb"^/v1/stock/(SKU-\d{4})$")


def _stock(sku: str) -> bytes:
    return orjson.dumps(
        {
            "sku": sku,
            "name": "Bench widget",
            "unit_price": 19.9,
            "unit_cost": 7.25,
            "warehouse": "WH-BER-1",
            "on_hand": 420,
            "reserved": 17,
            "available": 403,
        }
    )


def _response(status: bytes, body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: keep-alive\r\n\r\n"
    )
    return head + body


HEALTH = _response(b"200 OK", b'{"status":"ok"}')
UNAUTHORIZED = _response(b"401 Unauthorized", b'{"error":"unauthorized"}')
NOT_FOUND = _response(b"404 Not Found", b'{"error":"not_found"}')
_CACHE: dict[bytes, bytes] = {}


class BackendProtocol(asyncio.Protocol):
    """One keep-alive connection: parse with httptools, answer from precomputed bytes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.api_key = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.api_key = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-api-key":
            self.api_key = value

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        path = self.url.split(b"?", 1)[0]
        self.transport.write(self._answer(path))
        if not self.parser.should_keep_alive():
            self.transport.close()

    def _answer(self, path: bytes) -> bytes:
        if path == b"/__health":
            return HEALTH
        match = STOCK.match(path)
        if match is None:
            return NOT_FOUND
        if self.api_key != API_KEY:
            return UNAUTHORIZED
        sku = match.group(1)
        cached = _CACHE.get(sku)
        if cached is None:
            cached = _CACHE[sku] = _response(b"200 OK", _stock(sku.decode()))
        return cached


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BackendProtocol, host, port, reuse_address=True, backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench backend http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    args = parser.parse_args(argv)
    run: Any
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency (not on Windows)
        run = asyncio.run
    run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
