"""The fallback load generator when wrk is not installed: aiohttp on uvloop, keep-alive.

It is labelled ``python-loadgen`` in every result: on one core it saturates at a few thousand
requests per second, so against the faster references it measures itself, not the server.
Bounded by ``--duration`` and ``--max-requests``. Prints one ``WRKJSON {...}`` line with the
same fields as ``bench/wrk.lua``, plus what wrk cannot tell: the answers by status
(``statuses``) and the latency of the requests the server admitted, every answer but 503
(``admitted_p50_us``, ``admitted_p99_us``), and of its 503s (``refused_p99_us``), which the
overload scenario reports.

``--raw`` sends the request over plain asyncio streams instead of aiohttp (GET only,
``Content-Length`` bodies): a fraction of aiohttp's CPU per request, so one core of it can
keep a Python server busy (the overload scenario uses it).

Run: ``python -m bench.loadgen --url http://127.0.0.1:8000/x -c 32 -d 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


async def _next_turn(
    next_at: float | None, end: float, budget: list[int], interval: float
) -> float | None:
    """Wait for a worker's next request (paced when ``interval``) and take it from the
    shared ``budget``; the time of the one after, or None when the run is over."""
    now = time.perf_counter()
    if next_at is None or budget[0] <= 0 or now >= end:
        return None
    if interval:
        if next_at > now:
            await asyncio.sleep(next_at - now)
        next_at += interval
    budget[0] -= 1
    return next_at


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    end: float,
    budget: list[int],
    interval: float,
    latencies: list[float],
    errors: dict[str, int],
    statuses: dict[int, int],
    split: tuple[list[float], list[float]],
) -> None:
    admitted, refused = split
    next_at: float | None = time.perf_counter()
    while (next_at := await _next_turn(next_at, end, budget, interval)) is not None:
        start = time.perf_counter()
        try:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                status = resp.status
                if status >= 400:
                    errors["status_errors"] += 1
        except (TimeoutError, aiohttp.ClientError):
            errors["read_errors"] += 1
            continue
        took = (time.perf_counter() - start) * 1e6
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(took)
        (refused if status == 503 else admitted).append(took)


async def _raw_worker(
    target: tuple[str, int, bytes],
    end: float,
    budget: list[int],
    interval: float,
    latencies: list[float],
    errors: dict[str, int],
    statuses: dict[int, int],
    split: tuple[list[float], list[float]],
) -> None:
    """``_worker`` on one plain keep-alive connection (reopened when the server closes it)."""
    host, port, request = target
    admitted, refused = split
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    next_at: float | None = time.perf_counter()
    try:
        while (next_at := await _next_turn(next_at, end, budget, interval)) is not None:
            if writer is None or reader is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    errors["connect_errors"] += 1
                    await asyncio.sleep(0.01)
                    continue
            start = time.perf_counter()
            try:
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                status = int(head[9:12])
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
                    if length:
                        await reader.readexactly(length)
                close = b"\r\nconnection: close" in head
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                errors["read_errors"] += 1
                writer.close()
                reader = writer = None
                continue
            took = (time.perf_counter() - start) * 1e6
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 400:
                errors["status_errors"] += 1
            latencies.append(took)
            (refused if status == 503 else admitted).append(took)
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


def _raw_request(url: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def run(
    url: str,
    connections: int,
    duration: float,
    headers: dict[str, str],
    max_requests: int,
    rate: float,
    raw: bool = False,
) -> dict[str, Any]:
    """Drive ``url`` with ``connections`` keep-alive clients; the same summary as wrk.lua.
    A request still unanswered 10 s after the end is counted in ``timeouts``."""
    latencies: list[float] = []
    admitted: list[float] = []
    refused: list[float] = []
    statuses: dict[int, int] = {}
    errors = {"connect_errors": 0, "read_errors": 0, "write_errors": 0, "status_errors": 0}
    interval = connections / rate if rate > 0 else 0.0
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    tally = (latencies, errors, statuses, (admitted, refused))
    target = _raw_request(url, headers) if raw else None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        end = start + duration
        budget = [max_requests]
        tasks = [
            asyncio.ensure_future(
                _raw_worker(target, end, budget, interval, *tally)
                if target is not None
                else _worker(session, url, headers, end, budget, interval, *tally)
            )
            for _ in range(connections)
        ]
        _, late = await asyncio.wait(tasks, timeout=duration + 10)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - start
    admitted.sort()
    refused.sort()
    latencies.sort()
    return {
        "requests": len(latencies) + errors["read_errors"],
        "duration_us": int(elapsed * 1e6),
        **errors,
        "timeouts": len(late),
        "p50_us": percentile(latencies, 50),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "p999_us": percentile(latencies, 99.9),
        "mean_us": sum(latencies) / len(latencies) if latencies else 0.0,
        "max_us": latencies[-1] if latencies else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "admitted_p50_us": percentile(admitted, 50),
        "admitted_p99_us": percentile(admitted, 99),
        "refused_p99_us": percentile(refused, 99),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s in total; 0: max")
    parser.add_argument("--raw", action="store_true", help="plain asyncio streams, not aiohttp")
    args = parser.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency (not on Windows)
        pass
    summary = runner(
        run(
            args.url,
            args.connections,
            args.duration,
            headers,
            args.max_requests,
            args.rate,
            args.raw,
        )
    )
    print("WRKJSON " + orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    main()
