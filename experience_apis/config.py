"""Configuration of the experience layer (``config/experience.yaml``): versions and masking."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ExperienceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
