"""Trace look-up across workers: a trace that another worker (or host) served, found on demand.

Each worker keeps its own recent-span ring (``spans.SpanRing``). With Redis, each worker also
listens on one pub/sub channel, ``<prefix>console:trace-lookup``. A console look-up that
misses in its own ring publishes ``{key, reply_to, from}`` there; PUBLISH answers how many
workers listen. Every listener answers on the ``reply_to`` list (``<prefix>console:trace-reply:
<random>``, expiring after ``REPLY_TTL_S``): the trace's spans when its ring holds the key,
attributes redacted as the page shows them, at most the ring's size and ``MAX_ANSWER_BYTES``;
an empty answer otherwise. The asking worker pops answers until it has as many as PUBLISH
counted, or ``observability.console.trace_lookup_wait_s`` has passed, and merges the spans of
the answers that hold the trace.

Nothing runs per request: the only cost is one message per look-up that misses, and one
answer from each worker. The listener survives Redis outages: it reconnects with a growing
pause, warning once per outage, and stops when the console closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from gateway.stores.redis_options import DEFAULT_PREFIX, REDIS_TIMEOUTS

from .spans import SpanRecord, SpanRing, TraceView, assemble

log = logging.getLogger("trellis.console")

MAX_KEY_CHARS = 128
"""The longest key the console looks up (the search form's limit)."""
MAX_QUESTION_BYTES = 1024
"""Questions longer than this are ignored: a key, a reply key and a worker id fit easily."""
MAX_ANSWER_BYTES = 1 << 20
"""An answer stops adding spans at this size (and says it was cut); longer answers are
ignored by the asker."""
REPLY_TTL_S = 10
"""A reply list expires this long after its last answer: late answers do not pile up."""
LISTEN_POLL_S = 1.0
"""The listener's read timeout: how often it wakes to notice a dead connection."""
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
MIN_BLOCK_S = 0.01
"""BLPOP rounds its timeout to milliseconds and takes 0 as "for ever": never ask for less."""


class _Question(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str = Field(min_length=1, max_length=MAX_KEY_CHARS)
    reply_to: str = Field(max_length=256)
    sender: str = Field(alias="from", max_length=64)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    trace_id: str | None = Field(None, pattern="^[0-9a-f]{32}$")
    truncated: bool = False
    spans: list[SpanRecord] = []


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the other workers said about a key this worker does not hold."""

    trace: TraceView | None
    asked: int | None
    """Workers the question reached (this one among them); None when Redis failed."""
    answered: int
    truncated: bool = False
    """An answer was cut at ``MAX_ANSWER_BYTES``: the trace shows fewer spans than were kept."""


def encode_answer(
    trace_id: str | None, records: list[SpanRecord], cap: int = MAX_ANSWER_BYTES
) -> bytes:
    """One answer as JSON, the spans in start order until ``cap`` bytes would be passed
    (``truncated`` when spans were left out)."""
    parts: list[bytes] = []
    size = 128  # the envelope
    truncated = False
    for record in records:
        try:
            part = orjson.dumps(record)
        except orjson.JSONEncodeError:  # an attribute JSON cannot hold: that span is left out
            truncated = True
            continue
        if size + len(part) + 1 > cap:
            truncated = True
            break
        parts.append(part)
        size += len(part) + 1
    return b"".join(
        (
            b'{"trace_id":',
            orjson.dumps(trace_id),
            b',"truncated":',
            b"true" if truncated else b"false",
            b',"spans":[',
            b",".join(parts),
            b"]}",
        )
    )


def merge_answers(answers: list[bytes]) -> tuple[TraceView | None, bool]:
    """The trace the answers hold (the first one named, its spans from every answer naming
    it), and whether an answer was cut short. Malformed or oversized answers are skipped."""
    found: list[_Answer] = []
    for raw in answers:
        if len(raw) > MAX_ANSWER_BYTES:
            continue
        try:
            answer = _Answer.model_validate_json(raw)
        except ValidationError:
            continue
        if answer.trace_id is not None and answer.spans:
            found.append(answer)
    if not found:
        return None, False
    trace_id = found[0].trace_id
    assert trace_id is not None
    same = [a for a in found if a.trace_id == trace_id]
    records = [r for a in same for r in a.spans]
    return assemble(trace_id, records), any(a.truncated for a in same)


class TraceShare:
    """This worker's side of the look-up: its listener, and ``lookup`` for the console."""

    def __init__(
        self,
        ring: SpanRing,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        wait_s: float = 0.5,
    ) -> None:
        self.ring = ring
        self.wait_s = wait_s
        self.channel = f"{prefix}console:trace-lookup"
        self.reply_prefix = f"{prefix}console:trace-reply:"
        self.worker = uuid.uuid4().hex
        options = {**REDIS_TIMEOUTS, "socket_timeout": wait_s + 1.0}  # BLPOP waits up to wait_s
        # the listener holds one connection; a few console look-ups at once share the rest
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=6, timeout=1.0, **options
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._listener: asyncio.Task[None] | None = None
        self._down = False
        self.listening = asyncio.Event()
        """Set while subscribed (tests wait for it)."""
        self.answers_sent = 0

    # --- the listener -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening (in the background: a Redis that is down delays nothing)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="console-trace-share")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        self.listening.clear()
        await self._redis.aclose()

    async def _listen(self) -> None:
        pause = RECONNECT_MIN_S
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.listening.set()
                    if self._down:
                        log.info("trace look-up across workers: Redis is back")
                        self._down = False
                    pause = RECONNECT_MIN_S
                    while True:
                        message = await pubsub.get_message(timeout=LISTEN_POLL_S)
                        if message is not None and message.get("type") == "message":
                            await self._answer(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: listen again later, never end the worker
                self.listening.clear()
                if not self._down:
                    log.warning(
                        "trace look-up across workers: Redis failed (%s: %s); other workers "
                        "cannot look this worker's spans up until it is back",
                        type(exc).__name__,
                        exc,
                    )
                    self._down = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX_S)

    async def _answer(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if len(raw) > MAX_QUESTION_BYTES:
            return
        try:
            question = _Question.model_validate_json(raw)
        except ValidationError:
            return
        if not question.reply_to.startswith(self.reply_prefix):
            return  # answers go to this deployment's reply lists only
        trace_id: str | None = None
        records: list[SpanRecord] = []
        if question.sender != self.worker:  # the asker already missed in its own ring
            trace_id = self.ring.trace_id_for(question.key)
            if trace_id is not None:
                records = self.ring.records(trace_id, limit=self.ring.size)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(question.reply_to, encode_answer(trace_id, records))
            pipe.expire(question.reply_to, REPLY_TTL_S)
            await pipe.execute()
        self.answers_sent += 1

    # --- the asking side --------------------------------------------------------------------

    async def lookup(self, key: str) -> Lookup:
        """Ask every listening worker for ``key`` (a trace id or a request id) and wait at
        most ``wait_s`` for their answers."""
        key = key.strip().lower()[:MAX_KEY_CHARS]
        reply_to = self.reply_prefix + uuid.uuid4().hex
        question = orjson.dumps({"key": key, "reply_to": reply_to, "from": self.worker})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        answers: list[bytes] = []
        try:
            asked = int(await self._redis.publish(self.channel, question))
            while len(answers) < asked:
                left = deadline - loop.time()
                if left < MIN_BLOCK_S:
                    break
                popped = await self._redis.blpop([reply_to], timeout=round(left, 3))
                if popped is None:
                    break
                answer = popped[1]
                answers.append(answer.encode() if isinstance(answer, str) else answer)
        except (RedisError, OSError) as exc:
            log.debug("trace look-up across workers failed: %s", exc)
            return Lookup(trace=None, asked=None, answered=len(answers))
        trace, truncated = merge_answers(answers)
        return Lookup(trace=trace, asked=asked, answered=len(answers), truncated=truncated)
