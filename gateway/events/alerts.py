"""The alert raised when a delivery is dead-lettered: an ERROR log line, and an optional POST.

An alert must never block or break delivery: the POST has its own timeout, and its failure is
logged, not raised.
"""

from __future__ import annotations

import logging

import aiohttp
import orjson

from .config import AlertConfig
from .records import DeadLetter

log = logging.getLogger("trellis.events")


class DeadLetterAlerts:
    def __init__(self, config: AlertConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.session = session

    async def dead_lettered(self, letter: DeadLetter) -> None:
        last = letter.errors[-1].error if letter.errors else None
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
            return
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
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alert webhook failed: %s", type(exc).__name__)
