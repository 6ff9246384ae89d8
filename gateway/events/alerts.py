"""The alert raised when a delivery is dead-lettered: an ERROR log line, and an optional POST.

An alert must never block or break delivery: the POST has its own timeout, and its failure is
logged, not raised. An alert endpoint that is down (a connection error, a timeout, a 5xx or a
429) is retried in the background with full-jitter backoff (``events.alerts.retry``): at most
``max_pending`` alerts wait at once (past it the oldest is given up, with a warning), and
what still waits at shutdown is given up with a warning naming the dead letters (they stay in
the dead-letter queue, where ``trellis dlq`` and the admin API list them).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass

import aiohttp
import orjson

from .config import AlertConfig, AlertRetry
from .records import DeadLetter

log = logging.getLogger("trellis.events")


HISTORY_SIZE = 200
"""Alerts this worker remembers for the console (the newest; older ones are in the log)."""


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    """One alert as raised: when, about which dead letter, and where it went."""

    at: float
    dead_letter_id: str
    event_type: str
    subscriber: str
    attempts: int
    last_error: str | None
    outcome: str
    """``logged``, ``webhook <status>`` or ``webhook failed: <error kind>``."""


class DeadLetterAlerts:
    def __init__(self, config: AlertConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.session = session
        self.history: deque[RaisedAlert] = deque(maxlen=HISTORY_SIZE)
        self.counts: Counter[str] = Counter()
        """Dead letters this worker made, by subscriber (``trellis_events_dead_lettered``)."""
        self._retries: dict[str, asyncio.Task[None]] = {}
        """Alerts waiting for another POST, by dead-letter id, oldest first."""

    async def close(self) -> None:
        """Give up the alerts still waiting for a retry (their dead letters stay queued)."""
        if self._retries:
            log.warning(
                "alert webhook: %d alert(s) not delivered at shutdown: %s",
                len(self._retries),
                ", ".join(self._retries),
            )
        for task in self._retries.values():
            task.cancel()
        await asyncio.gather(*self._retries.values(), return_exceptions=True)
        self._retries.clear()

    async def dead_lettered(self, letter: DeadLetter) -> None:
        last = letter.errors[-1].error if letter.errors else None
        self.counts[letter.subscriber] += 1
        outcome = await self._raise(letter, last)
        self.history.append(
            RaisedAlert(
                time.time(),
                letter.id,
                letter.type,
                letter.subscriber,
                letter.attempts,
                last,
                outcome,
            )
        )

    async def _raise(self, letter: DeadLetter, last: str | None) -> str:
        log.error(
            "event %s (%s) dead-lettered for subscriber %s after %d attempt(s): %s",
            letter.event_id,
            letter.type,
            letter.subscriber,
            letter.attempts,
            last,
            extra={
                "dead_letter_id": letter.id,
                "event_id": letter.event_id,
                "event_type": letter.type,
                "subscriber": letter.subscriber,
                "attempts": letter.attempts,
                "trace_id": letter.trace_id,
            },
        )
        if self.config.webhook_url is None or self.session is None:
            return "logged"
        body: dict[str, object] = {
            "alert": "event.dead_lettered",
            "dead_letter_id": letter.id,
            "event_id": letter.event_id,
            "event_type": letter.type,
            "subject": letter.subject,
            "subscriber": letter.subscriber,
            "attempts": letter.attempts,
            "last_error": last,
            "trace_id": letter.trace_id,
            "created_at": letter.created_at.isoformat(),
        }
        outcome, retry = await self._post(body)
        if retry:
            self._retry_later(letter.id, body)
            outcome += "; retrying"
        return outcome

    async def _post(self, body: dict[str, object]) -> tuple[str, bool]:
        """One POST: its outcome, and whether another attempt may succeed."""
        assert self.config.webhook_url is not None and self.session is not None
        try:
            async with self.session.post(
                self.config.webhook_url,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            ) as resp:
                await resp.read()
                if resp.status >= 300:
                    log.warning("alert webhook answered %s", resp.status)
                return f"webhook {resp.status}", resp.status >= 500 or resp.status == 429
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alert webhook failed: %s", type(exc).__name__)
            return f"webhook failed: {type(exc).__name__}", True

    def _retry_later(self, letter_id: str, body: dict[str, object]) -> None:
        retry = self.config.retry
        if retry.max_attempts < 2:
            return
        while len(self._retries) >= retry.max_pending:
            oldest, task = next(iter(self._retries.items()))
            log.warning("alert webhook: too many alerts waiting; gave up on %s", oldest)
            task.cancel()
            del self._retries[oldest]
        task = asyncio.create_task(self._retry(letter_id, body, retry))
        self._retries[letter_id] = task
        task.add_done_callback(lambda t: self._forget(letter_id, t))

    def _forget(self, letter_id: str, task: asyncio.Task[None]) -> None:
        if self._retries.get(letter_id) is task:
            del self._retries[letter_id]

    async def _retry(self, letter_id: str, body: dict[str, object], retry: AlertRetry) -> None:
        for attempt in range(2, retry.max_attempts + 1):
            await asyncio.sleep(alert_delay(retry, attempt - 1))
            outcome, again = await self._post(body)
            if not again:
                log.info("alert for dead letter %s: %s on attempt %d", letter_id, outcome, attempt)
                return
        log.error(
            "alert for dead letter %s not delivered after %d attempts",
            letter_id,
            retry.max_attempts,
        )


def alert_delay(retry: AlertRetry, failed_attempt: int) -> float:
    """Full jitter within [base, base * 2^(n-1)], capped: never sooner than the base delay."""
    ceiling = min(retry.max_delay_s, retry.base_delay_s * 2 ** (failed_attempt - 1))
    floor = min(retry.base_delay_s, ceiling)
    return random.uniform(floor, ceiling)
