"""Configuration of the event bus (``config/events.yaml``).

One delivery policy applies to every subscription unless the subscription carries its own;
inbound webhook sources, outbound partner webhooks and the alert hook are declared here too,
so an operator finds every knob of event delivery in one file.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeliveryPolicy(Strict):
    """How hard we try: attempts, exponential backoff with full jitter, a cap, a timeout."""

    max_attempts: int = Field(3, ge=1, le=100)
    base_delay_s: float = Field(1.0, ge=0, description="Backoff before the 2nd attempt.")
    max_delay_s: float = Field(300.0, ge=0, description="Cap of any one backoff.")
    multiplier: float = Field(2.0, ge=1.0)
    jitter: bool = Field(
        True, description="Full jitter between base_delay_s and the exponential delay."
    )
    honour_retry_after: bool = True
    max_retry_after_s: float = Field(
        3600.0, ge=0, description="A subscriber's Retry-After is believed up to this long."
    )
    attempt_timeout_s: float = Field(30.0, gt=0, description="One handler call may take this.")


class SubscriberConfig(Strict):
    """Switches for one subscriber of ``process_apis.subscribers``."""

    enabled: bool = True
    delivery: DeliveryPolicy | None = None


class OutboundWebhookConfig(Strict):
    """A partner's subscription: Trellis POSTs matching events, signed, to ``url``."""

    partner_id: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=16, description="HMAC-SHA256 key shared with the partner.")
    event_types: list[str] = Field(min_length=1, description="Event types, or '*' for all.")
    enabled: bool = True
    masked: bool = Field(True, description="Mask PII with the partner channel's policy.")
    own_records_only: bool = Field(
        True,
        description="Send only events whose data.channel is this partner (its own orders); "
        "false sends every event of the listed types (for internal receivers).",
    )
    timeout_s: float = Field(10.0, gt=0)
    delivery: DeliveryPolicy | None = None


class InboundSourceConfig(Strict):
    """A sender allowed to POST ``/webhooks/{source}``, and how its signature is checked."""

    scheme: str = Field("stripe", pattern=r"^stripe$")
    secret: str = Field(min_length=8)
    tolerance_s: int = Field(300, ge=1, le=3600)
    max_body_bytes: int = Field(262_144, ge=1024, le=10_485_760)
    remember_s: int = Field(
        7 * 86_400, ge=60, description="How long a received event id is remembered (replays)."
    )
    event_types: dict[str, str] = Field(
        default_factory=lambda: {"invoice.paid": "invoice.paid"},
        description="Vendor event type -> our domain event type; others are acknowledged only.",
    )


class AlertRetry(Strict):
    max_attempts: int = Field(5, ge=1, le=20, description="POSTs per alert, the first included.")
    base_delay_s: float = Field(1.0, gt=0, description="Full-jitter backoff base.")
    max_delay_s: float = Field(60.0, gt=0, description="Cap of one backoff delay.")
    max_pending: int = Field(
        100, ge=1, description="Alerts waiting for a retry at once; past it the oldest is dropped."
    )


class AlertConfig(Strict):
    webhook_url: str | None = Field(None, description="POSTed a JSON alert per dead letter.")
    timeout_s: float = Field(5.0, gt=0)
    retry: AlertRetry = Field(default_factory=AlertRetry)


class BusConfig(Strict):
    """Dispatcher knobs, shared by the SQLite and the Redis bus."""

    concurrency: int = Field(16, ge=1, le=1024, description="Deliveries in flight per process.")
    poll_interval_s: float = Field(0.25, gt=0, description="Outbox poll when not woken.")
    batch_size: int = Field(100, ge=1, le=10_000)
    lease_s: float = Field(
        60.0, gt=0, description="A claimed delivery is re-offered after this (SQLite)."
    )
    claim_min_idle_s: float = Field(
        60.0, gt=0, description="Redis: a pending entry idle this long is reclaimed."
    )
    retention_s: int = Field(
        7 * 86_400, ge=60, description="Delivery state and processed ids are kept this long."
    )
    start_from: str = Field(
        "0", pattern=r"^(0|\$)$", description="Redis: a new consumer group starts at 0 or $."
    )
    drain_s: float = Field(
        5.0,
        ge=0,
        description="At shutdown, deliveries in flight may finish this long (no new ones start); "
        "keep it within gateway.server.shutdown_grace_s. Those still running are cut and "
        "delivered again after the restart.",
    )


class EventsConfig(Strict):
    enabled: bool = Field(True, description="Run the dispatcher in this process.")
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    subscribers: dict[str, SubscriberConfig] = Field(default_factory=dict)
    outbound_webhooks: dict[str, OutboundWebhookConfig] = Field(default_factory=dict)
    inbound_webhooks: dict[str, InboundSourceConfig] = Field(default_factory=dict)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    bus: BusConfig = Field(default_factory=BusConfig)

    @model_validator(mode="after")
    def _distinct_names(self) -> EventsConfig:
        clash = sorted(set(self.subscribers) & {f"webhook:{n}" for n in self.outbound_webhooks})
        if clash:
            raise ValueError(f"subscriber names clash with outbound webhooks: {clash}")
        return self

    def policy_for(self, subscriber: str) -> DeliveryPolicy:
        """The subscription's own policy, else the default one."""
        if subscriber.startswith("webhook:"):
            hook = self.outbound_webhooks.get(subscriber.removeprefix("webhook:"))
            if hook is not None and hook.delivery is not None:
                return hook.delivery
        sub = self.subscribers.get(subscriber)
        if sub is not None and sub.delivery is not None:
            return sub.delivery
        return self.delivery
