"""CPU per request of an ASGI app, called in-process: no HTTP server, no load generator.

The app under test is driven directly (``await app(scope, receive, send)``) by ``--concurrency``
coroutines on uvloop, against the real bench backend over real HTTP (another process), so
this process's CPU time is the app plus its outbound client. The server and the load
generator are out of the measurement, so the number moves little between runs: use it to
compare a change to the gateway's own path (A/B, ``--trellis-src``), then confirm the
end-to-end ratio with ``python -m bench.run``.

``python -m bench.inproc`` prints µs of CPU per request for the bare pass-through, Trellis
with every switchable policy off, and the full chain, each the median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench.run import (
    PYTHON,
    SYSTEM_ROUTE,
    VENV_BIN,
    free_port,
    free_port_block,
    set_backend_latency,
    trellis_config,
)
from system_apis.config import BACKEND_NAMES as BACKENDS

Message = dict[str, Any]
ASGI = Callable[
    [dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


def _scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> dict[str, Any]:
    if not any(name == b"host" for name, _ in headers):  # the gateway serves allowed hosts only
        headers = [(b"host", b"127.0.0.1"), *headers]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }


async def call(app: ASGI, scope: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope, headers=list(scope["headers"])), receive, send)
    return status, b"".join(chunks)


@contextlib.asynccontextmanager
async def lifespan(app: ASGI) -> AsyncIterator[None]:
    startup: asyncio.Queue[Message] = asyncio.Queue()
    done: asyncio.Queue[Message] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})

    async def send(message: Message) -> None:
        await done.put(message)

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, send)
    )
    msg = await done.get()
    if msg["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan failed: {msg}")
    try:
        yield
    finally:
        await startup.put({"type": "lifespan.shutdown"})
        await done.get()
        await task


async def measure(app: ASGI, scope: dict[str, Any], n: int, concurrency: int) -> float:
    """CPU µs per request over ``n`` requests at ``concurrency`` in flight."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, body = await call(app, scope)
            if status != 200:
                raise RuntimeError(f"answered {status}: {body[:200]!r}")

    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - start) / n * 1e6


async def trellis_app(config: Path) -> Any:
    os.environ["TRELLIS_CONFIG_DIR"] = str(config)
    from gateway.app import create_app
    from gateway.settings import load_settings

    return create_app(load_settings())


async def get_token(app: ASGI, client: str = "ops-admin", scopes: str = "system:read") -> str:
    basic = b64encode(f"{client}:{client}-secret".encode())
    scope = _scope(
        "POST",
        "/oauth/token",
        [
            (b"authorization", b"Basic " + basic),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
    )
    status, body = await call(app, scope, f"grant_type=client_credentials&scope={scopes}".encode())
    if status != 200:
        raise RuntimeError(f"token: {status} {body!r}")
    return str(orjson.loads(body)["access_token"])


async def run(args: argparse.Namespace, backend_port: int, tmp: Path) -> dict[str, list[float]]:
    from bench.passthrough import create_app as passthrough

    results: dict[str, list[float]] = {}
    apps: dict[str, tuple[ASGI, dict[str, Any]]] = {}
    stack = contextlib.AsyncExitStack()
    async with stack:
        if "bare" in args.variants:
            bare = passthrough(f"http://127.0.0.1:{backend_port}")
            await stack.enter_async_context(lifespan(bare))
            apps["bare"] = (bare, _scope("GET", "/v1/stock/SKU-0001", []))
        for name, full in (("off", False), ("full", True)):
            if name not in args.variants:
                continue
            cfg = trellis_config(
                tmp, name, backend_port=backend_port, sandbox_port=free_port(), full=full
            )
            app = await trellis_app(cfg)
            await stack.enter_async_context(lifespan(app))
            tok = await get_token(app)
            apps[name] = (
                app,
                _scope(
                    "GET",
                    SYSTEM_ROUTE,
                    [(b"authorization", f"Bearer {tok}".encode()), (b"host", b"127.0.0.1")],
                ),
            )
        if "c360" in args.variants:
            cfg = trellis_config(
                tmp, "c360", backend_port=backend_port, sandbox_port=args.sandbox_port, full=True
            )
            app = await trellis_app(cfg)
            await stack.enter_async_context(lifespan(app))
            tok = await get_token(app, "orders-service", "process:read")
            auth = [(b"authorization", f"Bearer {tok}".encode()), (b"host", b"127.0.0.1")]
            status, body = await call(app, _scope("GET", "/process/v1/customers", auth, b"limit=1"))
            if status != 200:
                raise RuntimeError(f"customers: {status} {body[:200]!r}")
            data = orjson.loads(body)
            customer = (data.get("data") or data.get("items"))[0]["id"]
            apps["c360"] = (app, _scope("GET", f"/process/v1/customers/{customer}", auth))
        for app, scope in apps.values():
            await measure(app, scope, args.requests // 4, args.concurrency)  # warm-up
        for _ in range(args.rounds):
            for name, (app, scope) in apps.items():
                results.setdefault(name, []).append(
                    await measure(app, scope, args.requests, args.concurrency)
                )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default="bare,off,full", help="also: c360 (customer 360)")
    p.add_argument("--latency-ms", type=float, default=0, help="sandbox latency for c360")
    args = p.parse_args(argv)
    args.variants = args.variants.split(",")
    backend_port = free_port()
    sandbox: subprocess.Popen[bytes] | None = None
    args.sandbox_port = 0
    if "c360" in args.variants:  # the customer 360 view fans out to the six sandboxes
        args.sandbox_port = free_port_block(len(BACKENDS))
        sandbox = subprocess.Popen(  # noqa: S603
            [str(VENV_BIN / "trellis"), "sandbox", "--base-port", str(args.sandbox_port)]
        )
        time.sleep(3)
        set_backend_latency(args.sandbox_port, args.latency_ms)
    backend = subprocess.Popen(  # noqa: S603
        [PYTHON, "-m", "bench.backend", "--port", str(backend_port)]
    )
    try:
        time.sleep(0.5)
        import uvloop

        with tempfile.TemporaryDirectory(prefix="trellis-inproc-") as tmp:
            results = uvloop.run(run(args, backend_port, Path(tmp)))
    finally:
        backend.terminate()
        backend.wait()
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait()
    bare = statistics.median(results["bare"]) if "bare" in results else None
    for name, values in results.items():
        med = statistics.median(values)
        ratio = f"  {bare / med:.2f}x of bare" if bare else ""
        spread = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:5} {med:7.1f} µs/request (rounds: {spread}){ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
