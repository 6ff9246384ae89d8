"""What asking a vendor for gzip costs and saves on the backend call (scenario ``z``).

A vendor process (``--serve``) answers two routes as a vendor would: one stock record
(~100 bytes, the bench route's size) and a page of 200 contact records (~40 KB, a list
call), gzipped on the fly (level 6) when the request says ``Accept-Encoding: gzip``. In this
process a ``BackendClient`` on the own transport calls each route with
``accept_encoding: identity`` and ``gzip``, in interleaved rounds (the machine is shared and
noisy), 8 calls in flight. Reported per size: the client's CPU per call (the decode is ours to
pay), wall time per call on loopback (where bytes are free: the worst case for compression),
and the bytes on the wire (what a real network saves), each as a gzip / identity ratio.

``python -m bench.compression [--rounds 5] [--calls 2000]`` prints the table alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import orjson

SMALL = orjson.dumps(
    {"sku": "SKU-0001", "warehouse": "MAIN", "on_hand": 120, "reserved": 4, "updated": 1764806400}
)
LIST = orjson.dumps(
    {
        "totalSize": 200,
        "done": True,
        "records": [
            {
                "attributes": {
                    "type": "Contact",
                    "url": f"/services/data/v60.0/Contact/003{i:012d}",
                },
                "Id": f"003{i:012d}",
                "FirstName": f"First{i}",
                "LastName": f"Last{i}",
                "Email": f"person{i}@example.com",
                "Phone": f"+1 555 {i:04d}",
                "MailingCity": ("Lyon", "Austin", "Osaka", "Leeds")[i % 4],
                "AccountId": f"001{i % 17:012d}",
                "LastModifiedDate": "2026-11-30T12:00:00.000+0000",
            }
            for i in range(200)
        ],
    }
)
PAYLOADS = {"small": SMALL, "list": LIST}
LEVEL = 6


def wire_bytes(payload: bytes, coding: str) -> int:
    return len(gzip.compress(payload, LEVEL, mtime=0)) if coding == "gzip" else len(payload)


async def serve(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        payload = PAYLOADS[request.match_info["size"]]
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(payload, LEVEL, mtime=0)  # on the fly, as a vendor does
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(body=body, headers=headers)
        return web.Response(body=payload, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/v1/{size}", answer)
    app.router.add_get("/__health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def one_run(url: str, coding: str, size: str, calls: int) -> tuple[float, float]:
    """(client CPU µs per call, wall ms per call) of ``calls`` calls, 8 in flight."""
    from system_apis.client import BackendClient
    from system_apis.config import BackendConfig

    cfg = BackendConfig.model_validate(
        {"base_url": url, "accept_encoding": coding, "rate_limit": None, "max_concurrency": 64}
    )
    client = BackendClient(cfg, url, name="vendor")
    await client.start()
    try:
        await client.request("GET", f"/v1/{size}")  # the connection made outside the timing
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                resp = await client.request("GET", f"/v1/{size}")
                if len(resp.body) != len(PAYLOADS[size]):
                    raise AssertionError("the decoded body differs")

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return cpu / calls * 1e6, wall / calls * 1e3
    finally:
        await client.close()


def measure(rounds: int = 5, calls: int = 2000) -> dict[str, Any]:
    """Start the vendor, run the interleaved rounds, return medians and ratios per size."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.compression", "--serve", str(port)]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with direct.open(url + "/__health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the compression vendor did not start") from None
                time.sleep(0.1)
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        variants = [(size, coding) for size in PAYLOADS for coding in ("identity", "gzip")]
        for r in range(rounds):
            order = variants if r % 2 == 0 else variants[::-1]  # alternate who goes first
            for size, coding in order:
                result = asyncio.run(one_run(url, coding, size, calls))
                samples.setdefault((size, coding), []).append(result)
    finally:
        proc.terminate()
        proc.wait(10)
    out: dict[str, Any] = {"rounds": rounds, "calls": calls, "in_flight": 8, "level": LEVEL}
    for size, payload in PAYLOADS.items():
        row: dict[str, Any] = {}
        for coding in ("identity", "gzip"):
            runs = samples[(size, coding)]
            row[coding] = {
                "cpu_us_per_call": round(statistics.median(c for c, _ in runs), 1),
                "wall_ms_per_call": round(statistics.median(w for _, w in runs), 3),
                "wire_bytes": wire_bytes(payload, coding),
            }
        ident, gz = row["identity"], row["gzip"]
        row["ratio_gzip_to_identity"] = {
            key: round(gz[key] / ident[key], 2)
            for key in ("cpu_us_per_call", "wall_ms_per_call", "wire_bytes")
        }
        out[size] = row
    return out


def text(result: dict[str, Any]) -> str:
    lines = [
        f"gzip vs identity, own transport, {result['calls']} calls x {result['rounds']} "
        f"interleaved rounds, {result['in_flight']} in flight (medians; ratio gzip/identity)",
        f"{'response':<10}{'wire bytes':>22}{'client CPU µs/call':>26}{'wall ms/call':>24}",
    ]
    for size in PAYLOADS:
        row = result[size]
        i, g, ratio = row["identity"], row["gzip"], row["ratio_gzip_to_identity"]
        lines.append(
            f"{size:<10}"
            f"{i['wire_bytes']:>8} -> {g['wire_bytes']:<6} x{ratio['wire_bytes']:<5}"
            f"{i['cpu_us_per_call']:>8} -> {g['cpu_us_per_call']:<6} x{ratio['cpu_us_per_call']:<5}"
            f"{i['wall_ms_per_call']:>8} -> {g['wall_ms_per_call']:<6} x{ratio['wall_ms_per_call']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__)
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.serve is not None:
        asyncio.run(serve(a.serve))
        return 0
    result = measure(a.rounds, a.calls)
    print(json.dumps(result, indent=2) if a.json else text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
