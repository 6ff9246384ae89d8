"""Configuration of the event bus (``config/events.yaml``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EventsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
