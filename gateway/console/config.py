"""``observability.console`` in ``config/observability.yaml``: the operator console's settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ConsoleConfig(BaseModel):
    """Session lifetime, the recent-span ring, the time-series sampling and the tracing UI."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve the console at /console (admin scope only).")
    session_ttl_s: int = Field(
        900, ge=60, le=43_200, description="Lifetime of a console sign-in (its cookie and token)."
    )
    recent_spans: int = Field(
        2000, ge=0, le=100_000, description="Ended spans each worker keeps for trace look-up."
    )
    record_spans: bool = Field(
        False,
        description="Record spans for the ring even with tracing.exporter none (each request "
        "then pays for a recorded span); with an exporter the ring sees what is sampled.",
    )
    trace_lookup_wait_s: float = Field(
        0.5,
        gt=0,
        le=5.0,
        description="With Redis, how long a trace look-up that misses in this worker's ring "
        "waits for the other workers' answers.",
    )
    sample_interval_s: float = Field(
        10.0, ge=1.0, le=60.0, description="How often the overview's time series take a sample."
    )
    refresh_s: float = Field(5.0, ge=1.0, le=300.0, description="The overview's polling period.")
    probe_timeout_s: float = Field(1.0, gt=0, le=10.0, description="Backend reachability probe.")
    tracing_ui_url: str | None = Field(
        None,
        description="Link to a trace in your tracing UI, with {trace_id} in it, e.g. "
        "http://jaeger.internal:16686/trace/{trace_id}.",
    )

    @field_validator("tracing_ui_url")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None:
            if "{trace_id}" not in value:
                raise ValueError("tracing_ui_url must contain {trace_id}")
            if not value.startswith(("http://", "https://")):
                raise ValueError("tracing_ui_url must be an http(s) URL")
        return value
