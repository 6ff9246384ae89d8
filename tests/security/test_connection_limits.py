"""A hostile client cannot hold a worker: head size, head and body timeouts, idle keep-alive
and the connection cap, over real sockets against uvicorn with either HTTP/1.1 parser.

The timeouts are small here so that the tests stay fast; every timing assertion is only
"closed within a generous bound", never "closed at exactly".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.server.config import ServerLimits
from gateway.server.serving import server_config
from tests.servers import serve

pytestmark = pytest.mark.slow  # subprocesses or real timeouts: not in make test-fast

PARSERS = ["httptools", "h11"]
BOUND_S = 8.0
"""Generous: how long a limit may take to act on a loaded machine."""


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(1.5)
    return PlainTextResponse("slow")


async def late_echo(request: Request) -> PlainTextResponse:
    await asyncio.sleep(2.0)  # e.g. a slow authorization check before the body is read
    return PlainTextResponse(str(len(await request.body())))


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(str(len(body)))


APP = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/slow", slow),
        Route("/echo", echo, methods=["POST"]),
        Route("/late-echo", late_echo, methods=["POST"]),
    ]
)


@asynccontextmanager
async def served(http: str, **limits: object) -> AsyncIterator[tuple[str, int]]:
    cfg = ServerLimits.model_validate({"http": http, **limits})
    config = server_config(APP, cfg, log_level="warning", lifespan="on", proxy_headers=False)
    async with serve(APP, config=config) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


async def read_all(reader: asyncio.StreamReader, bound: float = BOUND_S) -> bytes:
    """Everything until the server closes (a reset counts as closed)."""
    chunks = []
    try:
        async with asyncio.timeout(bound):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return b"".join(chunks)


async def closed_within(reader: asyncio.StreamReader, bound: float = BOUND_S) -> bytes:
    """Wait for the server to close; fail if it has not within ``bound``."""
    try:
        return await read_all(reader, bound)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {bound} s")


async def get_healthz(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await read_all(reader)
    writer.close()
    return answer


def head(*headers: bytes, path: bytes = b"/healthz") -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: t", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def send(host: str, port: int, data: bytes) -> bytes:
    """Send ``data`` (the client may be cut off while sending) and read the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    answer = await read_all(reader)
    writer.close()
    return answer


# --- the request head ---------------------------------------------------------------------


@pytest.mark.parametrize("http", PARSERS)
async def test_a_100kb_header_is_refused_431_and_a_neighbour_is_served(http: str) -> None:
    async with served(http) as (host, port):
        big = send(host, port, head(b"X-Big: " + b"a" * 100_000))
        started = time.monotonic()
        answer, neighbour = await asyncio.gather(big, get_healthz(host, port))
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"application/problem+json" in answer
        assert neighbour.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started < BOUND_S


@pytest.mark.parametrize("http", PARSERS)
async def test_a_64mb_header_is_cut_off_early(http: str) -> None:
    """The client is answered and cut off after the limit: the server does not read 64 MB."""
    async with served(http) as (host, port):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(head()[:-2])  # the head, unterminated
        sent = 0
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            async with asyncio.timeout(BOUND_S):
                while sent < 64 << 20:
                    writer.write(b"X-Pad: " + b"a" * 8000 + b"\r\n")
                    sent += 8009
                    await writer.drain()
        assert sent < 16 << 20
        writer.close()
        assert (await get_healthz(host, port)).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("http", PARSERS)
@pytest.mark.parametrize(
    "headers",
    [
        [b"X-Long: " + b"a" * 20_000],  # one line over 16 KB, the head under 64 KB
        [b"X-Many-%d: " % i + b"a" * 1000 for i in range(70)],  # lines short, 70 KB in all
    ],
    ids=["long-line", "many-lines"],
)
async def test_each_head_limit_answers_431(http: str, headers: list[bytes]) -> None:
    async with served(http) as (host, port):
        answer = await send(host, port, head(*headers))
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


@pytest.mark.parametrize("http", PARSERS)
async def test_a_large_head_within_the_limits_is_served_whatever_the_reads(http: str) -> None:
    """Just under both limits, in reads that split lines and the head's end anywhere."""
    data = head(*[b"X-Fill-%d: " % i + b"a" * 15_000 for i in range(4)])
    assert len(data) < 65_536
    async with served(http) as (host, port):
        for cut in (1, 2, 3, 15_020, len(data) - 3, len(data) - 2, len(data) - 1):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(data[:cut])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(data[cut:])
            answer = await read_all(reader)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200 "), (cut, answer[:200])


@pytest.mark.parametrize("http", PARSERS)
async def test_a_request_after_a_body_starts_a_new_head(http: str) -> None:
    """Keep-alive: a body's bytes do not count toward the next request's head."""
    body = b"b" * 60_000
    post = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    async with served(http) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(3):
            writer.write(post)
            await writer.drain()
            status = await reader.readuntil(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 200 "), status
            length = int(status.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == b"60000"
        writer.close()


# --- slow and idle connections ------------------------------------------------------------


@pytest.mark.parametrize("http", PARSERS)
async def test_a_silent_connection_is_closed_after_the_header_timeout(http: str) -> None:
    async with served(http, header_timeout_s=0.5) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        assert await closed_within(reader) == b""
        writer.close()


@pytest.mark.parametrize("http", PARSERS)
async def test_a_partial_head_is_answered_408_and_closed(http: str) -> None:
    async with served(http, header_timeout_s=0.5) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        answer = await closed_within(reader)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        writer.close()


@pytest.mark.parametrize("http", PARSERS)
async def test_a_pipelined_partial_head_never_cuts_into_a_response(http: str) -> None:
    """The head timeout of a request queued behind a slow one does not interrupt the answer."""
    async with served(http, header_timeout_s=0.5) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # a read of its own: the second head starts while /slow runs
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        answer = await closed_within(reader)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        first, _, rest = answer.partition(b"\r\n\r\n")
        assert rest.startswith(b"slow")
        assert b"408" not in first
        writer.close()


@pytest.mark.parametrize("http", PARSERS)
async def test_a_head_dribbled_byte_by_byte_is_closed_anyway(http: str) -> None:
    """Bytes that keep coming do not extend the header timeout."""
    async with served(http, header_timeout_s=1.0) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        closed = asyncio.create_task(closed_within(reader))
        line = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
        started = time.monotonic()
        for byte in line:
            if closed.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
            await asyncio.sleep(0.05)
        assert (await closed).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < BOUND_S
        writer.close()


@pytest.mark.parametrize("http", PARSERS)
async def test_a_body_slower_than_the_floor_is_cut_off(http: str) -> None:
    async with served(http, body_min_bytes_per_s=1000, body_grace_s=0.5) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        closed = asyncio.create_task(closed_within(reader))
        started = time.monotonic()
        while not closed.done():  # 10 bytes every 0.1 s: 100 B/s
            try:
                writer.write(b"x" * 10)
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
            await asyncio.sleep(0.1)
        await closed
        assert time.monotonic() - started < BOUND_S
        writer.close()


@pytest.mark.parametrize("http", PARSERS)
async def test_a_body_above_the_floor_is_read_whole(http: str) -> None:
    async with served(http, body_min_bytes_per_s=1000, body_grace_s=0.5) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6000\r\n\r\n")
        for _ in range(6):  # 1000 bytes every 0.25 s: 4000 B/s, over 1.5 s
            writer.write(b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.25)
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200 "), status
        writer.close()


@pytest.mark.parametrize("http", PARSERS)
async def test_a_client_waiting_for_100_continue_is_not_cut_off(http: str) -> None:
    """No body arrives until the app reads it (uvicorn sends "100 Continue" then)."""
    async with served(http, body_min_bytes_per_s=1000, body_grace_s=0.5) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /late-echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        writer.write(b"x" * 5000)
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"5000"), answer
        writer.close()


@pytest.mark.parametrize("http", PARSERS)
async def test_an_idle_keep_alive_connection_is_closed(http: str) -> None:
    async with served(http, keep_alive_s=0.5) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive
        answer = await closed_within(reader)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok")
        writer.close()


# --- the connection cap -------------------------------------------------------------------


async def _answer_or_reset(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        return b""
    answer = await read_all(reader)
    writer.close()
    return answer


@pytest.mark.parametrize("http", PARSERS)
async def test_connections_above_the_cap_are_refused_while_open_ones_work(http: str) -> None:
    async with served(http, max_connections=3) as (host, port):
        held = [await asyncio.open_connection(host, port) for _ in range(3)]
        await asyncio.sleep(0.1)
        refused = await _answer_or_reset(host, port)
        assert refused == b"" or refused.startswith(b"HTTP/1.1 503 "), refused[:200]
        assert b"retry-after: 1" in refused or refused == b""
        for reader, writer in held:  # the open ones are served
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            status = await reader.readuntil(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 200 ")
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)  # their slots are free again
        assert (await get_healthz(host, port)).startswith(b"HTTP/1.1 200 ")


def test_inconsistent_limits_are_refused_naming_the_key() -> None:
    from gateway.settings import DEFAULT_CONFIG_DIR, ConfigError, load_settings

    with pytest.raises(ConfigError) as bad:
        load_settings(
            DEFAULT_CONFIG_DIR,
            gateway={"server": {"shutdown_grace_s": 2, "shutdown_close_s": 3}},
        )
    assert any(
        p.startswith("config/gateway.yaml: server: shutdown_close_s must be less")
        for p in bad.value.problems
    ), bad.value.problems
    with pytest.raises(ConfigError) as bad:
        load_settings(DEFAULT_CONFIG_DIR, gateway={"server": {"max_header_bytes": 100}})
    assert any("server.max_header_bytes" in p for p in bad.value.problems), bad.value.problems
