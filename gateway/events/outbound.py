"""Outbound webhooks: a partner's subscription becomes a bus subscription that POSTs the event.

Any non-2xx answer or network failure is a failed attempt (same retry, backoff and DLQ as
every subscriber); a ``Retry-After`` in the answer is honoured. The session is made in the
bus's ``start()`` and every call has its own timeout.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from process_apis.ports import DomainEvent

from .config import EventsConfig, OutboundWebhookConfig
from .signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from .subscriptions import Subscription

_DELTA_SECONDS = re.compile(r"[0-9]{1,10}", re.ASCII)

CONTENT_TYPE = "application/cloudevents+json"
PARTNER_HEADER = "Trellis-Partner"

Masker = Callable[[Any], Any]
"""Masks an event's ``data`` for partners (the experience layer's partner-channel policy)."""


class WebhookFailed(Exception):
    """The partner did not accept the event; ``retry_after`` is what it asked us to wait."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):  # ASCII digits only: "²".isdigit() is True
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def body_for(event: DomainEvent, hook: OutboundWebhookConfig, mask: Masker) -> bytes:
    """The CloudEvent as the partner sees it: data masked unless the subscription says not."""
    doc = event.model_dump(mode="json")
    if hook.masked:
        doc["data"] = mask(doc["data"])
    doc["partnerid"] = hook.partner_id  # a CloudEvents extension attribute
    return orjson.dumps(doc)


def webhook_sender(
    hook: OutboundWebhookConfig, session: Callable[[], aiohttp.ClientSession], mask: Masker
) -> Callable[[DomainEvent], Awaitable[None]]:
    async def send(event: DomainEvent) -> None:
        if hook.own_records_only and event.data.get("channel") != hook.partner_id:
            return  # another partner's (or nobody's) record: nothing to send to this one
        payload = body_for(event, hook, mask)
        headers = {
            "Content-Type": CONTENT_TYPE,
            SIGNATURE_HEADER: sign(payload, hook.secret),
            TIMESTAMP_HEADER: str(int(time.time())),
            EVENT_ID_HEADER: event.id,
            EVENT_TYPE_HEADER: event.type,
            PARTNER_HEADER: hook.partner_id,
        }
        if event.traceparent:
            headers["traceparent"] = event.traceparent
        try:
            async with session().post(
                hook.url,
                data=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=hook.timeout_s),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return
                raise WebhookFailed(
                    f"partner {hook.partner_id} answered {resp.status}",
                    parse_retry_after(resp.headers.get("Retry-After")),
                )
        except aiohttp.ClientError as exc:
            raise WebhookFailed(f"partner {hook.partner_id}: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise WebhookFailed(
                f"partner {hook.partner_id}: no answer within {hook.timeout_s}s"
            ) from exc

    return send


def webhook_subscriptions(
    config: EventsConfig, session: Callable[[], aiohttp.ClientSession], mask: Masker
) -> list[Subscription]:
    """One subscription per enabled partner webhook, named ``webhook:<name>``."""
    return [
        Subscription(
            f"webhook:{name}",
            frozenset(hook.event_types),
            webhook_sender(hook, session, mask),
            config.policy_for(f"webhook:{name}"),
        )
        for name, hook in config.outbound_webhooks.items()
        if hook.enabled
    ]
