"""PII masking as pure functions: one policy per channel, the same for responses, logs, events.

A policy maps field names to rules and applies at any depth, so a payload's shape does not have
to be known in advance (an order, a 360 view, an event's ``data``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .config import ExperienceConfig, MaskRule

__all__ = ["mask_email", "mask_for_channel", "mask_initial", "mask_payload", "mask_phone"]

_DIGITS = re.compile(r"\d")


def mask_email(value: str) -> str:
    """``ada@example.com`` -> ``a***@example.com`` (the domain stays: it tells the company)."""
    local, at, domain = value.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(value: str) -> str:
    """Only the last two digits stay: ``+1-555-123-4567`` -> ``*********67``."""
    digits = _DIGITS.findall(value)
    if len(digits) <= 2:
        return "*" * len(digits)
    return "*" * (len(digits) - 2) + "".join(digits[-2:])


def mask_initial(value: str) -> str:
    """``Ada Lovelace`` -> ``A. L.``: enough to recognise, not enough to identify."""
    parts = [p for p in value.split() if p]
    return " ".join(f"{p[:1]}." for p in parts) or "*"


def mask_value(rule: MaskRule, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        return "***" if rule is not MaskRule.DROP else None
    if rule is MaskRule.EMAIL:
        return mask_email(value)
    if rule is MaskRule.PHONE:
        return mask_phone(value)
    if rule is MaskRule.INITIAL:
        return mask_initial(value)
    return "***"


def mask_payload(data: Any, policy: Mapping[str, MaskRule]) -> Any:
    """A copy of ``data`` (dicts, lists, scalars) with every field named in ``policy`` masked
    by its rule, at any depth; ``drop`` removes the field. The input is never modified."""
    if not policy:
        return data
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            rule = policy.get(key)
            if rule is MaskRule.DROP:
                continue
            if rule is not None and not isinstance(value, Mapping | list):
                out[key] = mask_value(rule, value)
            elif rule is not None and isinstance(value, list):  # e.g. several emails
                out[key] = [
                    mask_payload(v, policy)
                    if isinstance(v, Mapping | list)
                    else mask_value(rule, v)
                    for v in value
                ]
            else:
                out[key] = mask_payload(value, policy)
        return out
    if isinstance(data, list):
        return [mask_payload(item, policy) for item in data]
    return data


def mask_for_channel(config: ExperienceConfig, channel: str, data: Any) -> Any:
    """``mask_payload`` with the channel's configured policy (for logs and partner webhooks)."""
    return mask_payload(data, config.masking_for(channel))
