"""Trace look-up across workers: two span rings, each with its own ``TraceShare``, talking
through real Redis as two workers do."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.console.spans import SpanRecord, SpanRing
from gateway.console.trace_share import (
    REPLY_TTL_S,
    TraceShare,
    encode_answer,
    merge_answers,
)
from gateway.policies.redaction import REDACTED
from gateway.policies.tracing import REQUEST_ID_ATTRIBUTE
from tests.servers import free_port


def _ring(size: int = 100) -> tuple[SpanRing, TracerProvider]:
    ring = SpanRing(size)
    provider = TracerProvider()
    provider.add_span_processor(ring)
    return ring, provider


def _serve(provider: TracerProvider, request_id: str) -> str:
    """One request's spans (a server span, a backend call under it); its trace id."""
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "GET /x",
        kind=SpanKind.SERVER,
        attributes={REQUEST_ID_ATTRIBUTE: request_id, "client_secret": "s3cret"},
    ) as server:
        with tracer.start_as_current_span("GET crm", kind=SpanKind.CLIENT) as call:
            call.set_status(Status(StatusCode.ERROR))
        return format(server.get_span_context().trace_id, "032x")


@contextlib.asynccontextmanager
async def _worker(
    ring: SpanRing, url: str, prefix: str, wait_s: float
) -> AsyncIterator[TraceShare]:
    share = TraceShare(ring, url, prefix=prefix, wait_s=wait_s)
    await share.start()
    try:
        await asyncio.wait_for(share.listening.wait(), 5)
        yield share
    finally:
        await share.close()


async def test_a_trace_only_the_other_worker_holds_is_found(
    redis_url: str, redis_prefix: str
) -> None:
    ring_a, _ = _ring()
    ring_b, provider_b = _ring()
    trace_id = _serve(provider_b, "req-on-b")
    assert ring_a.trace_id_for("req-on-b") is None
    async with (
        _worker(ring_a, redis_url, redis_prefix, 2.0) as a,
        _worker(ring_b, redis_url, redis_prefix, 2.0),
    ):
        for key in ("req-on-b", trace_id, trace_id.upper()):
            found = await a.lookup(key)
            assert found.asked == 2 and found.answered == 2  # both answer, the asker too
            assert found.trace is not None and found.trace.trace_id == trace_id
            assert found.trace == ring_b.trace(trace_id)  # as b's own page shows it
            assert [s.name for s in found.trace.spans] == ["GET /x", "GET crm"]
            assert [s.depth for s in found.trace.spans] == [0, 1]
            assert found.trace.spans[1].error
            assert found.trace.spans[0].attributes["client_secret"] == REDACTED
        # the asker took every answer: nothing is left behind
        client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
        try:
            assert [k async for k in client.scan_iter(match=f"{redis_prefix}*")] == []
            # an answer nobody takes (its asker gave up) expires on its own
            reply_to = f"{redis_prefix}console:trace-reply:late"
            question = orjson.dumps({"key": "req-on-b", "reply_to": reply_to, "from": "x"})
            assert await client.publish(f"{redis_prefix}console:trace-lookup", question) == 2
            for _ in range(100):
                if await client.llen(reply_to) == 2:
                    break
                await asyncio.sleep(0.02)
            assert 0 < await client.ttl(reply_to) <= REPLY_TTL_S
            # a question naming a key outside the reply lists gets no answer
            elsewhere = f"{redis_prefix}not-a-reply"
            question = orjson.dumps({"key": "req-on-b", "reply_to": elsewhere, "from": "x"})
            await client.publish(f"{redis_prefix}console:trace-lookup", question)
            await asyncio.sleep(0.3)
            assert not await client.exists(elsewhere)
        finally:
            await client.aclose()


async def test_a_miss_is_answered_within_the_bound_even_when_a_listener_is_silent(
    redis_url: str, redis_prefix: str
) -> None:
    ring_a, _ = _ring()
    ring_b, provider_b = _ring()
    _serve(provider_b, "kept")
    async with (
        _worker(ring_a, redis_url, redis_prefix, 0.5) as a,
        _worker(ring_b, redis_url, redis_prefix, 0.5),
    ):
        started = time.monotonic()
        missing = await a.lookup("never-served")
        assert missing.trace is None and missing.asked == 2 and missing.answered == 2
        assert time.monotonic() - started < 0.5  # every listener answered: no waiting
        # a listener that never answers (a worker stuck or gone mid-way) costs the bound only
        silent = aioredis.Redis.from_url(redis_url, socket_timeout=2)
        pubsub = silent.pubsub()
        await pubsub.subscribe(f"{redis_prefix}console:trace-lookup")
        try:
            started = time.monotonic()
            missing = await a.lookup("never-served")
            waited = time.monotonic() - started
            assert missing.trace is None and missing.asked == 3 and missing.answered == 2
            assert 0.4 < waited < 1.0, waited
        finally:
            await pubsub.aclose()
            await silent.aclose()


async def test_redis_down_leaves_the_local_lookup_and_the_worker_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ring, provider = _ring()
    trace_id = _serve(provider, "local")
    dead = f"redis://127.0.0.1:{free_port()}/15"  # nothing listens there
    share = TraceShare(ring, dead, prefix="trellis-test-dead:", wait_s=0.5)
    with caplog.at_level(logging.WARNING, logger="trellis.console"):
        await share.start()
        started = time.monotonic()
        lookup = await share.lookup("elsewhere")
        assert time.monotonic() - started < 1.5
        assert lookup.trace is None and lookup.asked is None
        assert ring.trace_id_for("local") == trace_id  # the ring itself needs no Redis
        await asyncio.sleep(2.0)  # reconnect attempts at 0.5 s, then 1 s
        assert share._listener is not None and not share._listener.done()
        assert not share.listening.is_set()
        started = time.monotonic()
        await share.close()
        assert time.monotonic() - started < 1.0
    warnings = [r for r in caplog.records if "trace look-up across workers" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def test_the_listener_comes_back_with_redis(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable at start (a proxy not yet listening), then reachable: the listener
    subscribes without a restart, and says so."""
    port = free_port()
    ring_a, _ = _ring()
    ring_b, provider_b = _ring()
    trace_id = _serve(provider_b, "after-outage")
    db = redis_url.rsplit("/", 1)[1]
    b = TraceShare(ring_b, f"redis://127.0.0.1:{port}/{db}", prefix=redis_prefix, wait_s=1.0)
    target = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target["host"], target["port"])
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    with caplog.at_level(logging.INFO, logger="trellis.console"):
        await b.start()
        await asyncio.sleep(0.8)
        assert not b.listening.is_set()
        proxy = await asyncio.start_server(forward, "127.0.0.1", port)
        try:
            await asyncio.wait_for(b.listening.wait(), 10)
            async with _worker(ring_a, redis_url, redis_prefix, 1.0) as a:
                found = await a.lookup("after-outage")
                assert found.trace is not None and found.trace.trace_id == trace_id
        finally:
            await b.close()
            proxy.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("Redis failed" in m for m in messages)
    assert any("Redis is back" in m for m in messages)


def test_answers_are_capped_and_merged_by_span() -> None:
    def record(i: int, parent: int | None = None) -> SpanRecord:
        return SpanRecord(
            name=f"s{i}",
            kind="internal",
            span_id=format(i, "016x"),
            parent_id=format(parent, "016x") if parent is not None else None,
            start_ns=1_000_000 * i,
            end_ns=1_000_000 * i + 500_000,
            error=False,
            attributes={"x": "y" * 1000},
        )

    trace_id = "ab" * 16
    records = [record(1)] + [record(i, 1) for i in range(2, 40)]
    cut = encode_answer(trace_id, records, cap=10_000)
    assert len(cut) <= 10_000
    trace, truncated = merge_answers([cut])
    assert truncated and trace is not None and 0 < len(trace.spans) < len(records)
    # a trace split across two answers is one tree; a span both hold is shown once
    first, second = encode_answer(trace_id, records[:20]), encode_answer(trace_id, records[15:])
    empty = encode_answer(None, [])
    trace, truncated = merge_answers([empty, b"not json", first, second])
    assert not truncated and trace is not None
    assert [s.name for s in trace.spans] == [r.name for r in records]
    assert trace.spans[0].depth == 0 and {s.depth for s in trace.spans[1:]} == {1}
    assert trace.total_ms == pytest.approx(38.5)
    assert merge_answers([empty, empty]) == (None, False)
    # a span whose attributes JSON cannot hold is left out, not the answer
    odd = dataclasses.replace(record(2, 1), attributes={"x": 2**70})
    trace, truncated = merge_answers([encode_answer(trace_id, [records[0], odd, records[2]])])
    assert truncated and trace is not None and [s.name for s in trace.spans] == ["s1", "s3"]
