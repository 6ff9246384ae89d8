"""The alert raised when a delivery is dead-lettered: an ERROR log line, and an optional POST.

An alert must never block or break delivery: the POST has its own timeout, and its failure is
logged, not raised.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass

import aiohttp
import orjson

from .config import AlertConfig
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
        body = {
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
                return f"webhook {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alert webhook failed: %s", type(exc).__name__)
            return f"webhook failed: {type(exc).__name__}"
