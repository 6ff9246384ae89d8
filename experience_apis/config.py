"""Configuration of the experience layer (``config/experience.yaml``): versions and masking.

Per channel: which path versions exist and their lifecycle (active, deprecated with a sunset
date, retired), and the masking policy (field path -> rule) applied to everything that channel
receives: responses, log records and event payloads.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CHANNELS: tuple[str, ...] = ("web", "mobile", "support", "partner")
IMPLEMENTED_VERSIONS: frozenset[str] = frozenset({"v1"})
"""Versions whose views exist in code; a non-retired version must be one of them."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionStatus(StrEnum):
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


class VersionPolicy(Strict):
    status: VersionStatus = VersionStatus.ACTIVE
    deprecated_at: datetime | None = Field(
        None, description="When it was deprecated (the Deprecation header, RFC 9745)."
    )
    sunset: datetime | None = Field(
        None, description="When it stops (deprecated) or stopped (retired) working (RFC 8594)."
    )
    link: str | None = Field(None, description="Migration guide, sent as a Link header.")

    @model_validator(mode="after")
    def _dates(self) -> VersionPolicy:
        if self.status is VersionStatus.DEPRECATED and self.deprecated_at is None:
            raise ValueError("a deprecated version needs deprecated_at")
        return self


class MaskRule(StrEnum):
    EMAIL = "email"  # a***@example.com
    PHONE = "phone"  # ********34 (last two digits)
    INITIAL = "initial"  # A.
    REDACT = "redact"  # ***
    DROP = "drop"  # the field is removed


MASK_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[\])?)*")
"""A masking path: field names joined by dots, ``[]`` after a list's name."""


class ChannelConfig(Strict):
    versions: dict[str, VersionPolicy] = Field(default_factory=lambda: {"v1": VersionPolicy()})
    masking: dict[str, MaskRule] = Field(
        default_factory=dict,
        description="Field path -> rule: the path of a field in the payloads the channel "
        "sends, from their root (``buyer.email``; ``orders[].email`` for each item of a list).",
    )

    @field_validator("masking")
    @classmethod
    def _paths(cls, value: dict[str, MaskRule]) -> dict[str, MaskRule]:
        for path in value:
            if not MASK_PATH.fullmatch(path):
                raise ValueError(f"masking path {path!r} is not like buyer.email or items[].email")
        return value

    @model_validator(mode="after")
    def _versions(self) -> ChannelConfig:
        for name, policy in self.versions.items():
            if not name.startswith("v") or not name[1:].isdigit():
                raise ValueError(f"version {name!r} must look like v1, v2...")
            if policy.status is not VersionStatus.RETIRED and name not in IMPLEMENTED_VERSIONS:
                raise ValueError(
                    f"version {name} is {policy.status.value} but not implemented; "
                    f"implemented: {sorted(IMPLEMENTED_VERSIONS)}"
                )
        return self


class ExperienceConfig(Strict):
    channels: dict[str, ChannelConfig] = Field(
        default_factory=lambda: {name: ChannelConfig() for name in CHANNELS}
    )
    mobile_cache_max_age_s: int = Field(0, ge=0, description="Cache-Control max-age on mobile.")

    @model_validator(mode="after")
    def _known(self) -> ExperienceConfig:
        unknown = sorted(set(self.channels) - set(CHANNELS))
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; known: {list(CHANNELS)}")
        return self

    def channel(self, name: str) -> ChannelConfig:
        return self.channels.get(name) or ChannelConfig()

    def masking_for(self, channel: str) -> dict[str, MaskRule]:
        """The masking policy of ``channel`` ({} when it masks nothing)."""
        return dict(self.channel(channel).masking)
