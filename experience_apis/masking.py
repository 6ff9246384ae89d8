"""PII masking as pure functions: one policy per channel, the same for responses, logs, events.

A policy maps field paths to rules. A path names a field by where it sits in the payload the
channel sends, from its root: ``buyer.email``, ``orders[].customer.email`` (``[]``: each item
of a list). Only the fields a path names are touched, so a product's ``name`` is not a person's
``buyer.name``; a path the payload does not have masks nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .config import MASK_PATH, ExperienceConfig, MaskRule

__all__ = [
    "compile_policy",
    "mask_email",
    "mask_for_channel",
    "mask_initial",
    "mask_payload",
    "mask_phone",
]

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
    if isinstance(value, list):  # e.g. several emails in one field
        return [mask_value(rule, v) for v in value]
    if not isinstance(value, str):
        return "***" if rule is not MaskRule.DROP else None
    if rule is MaskRule.EMAIL:
        return mask_email(value)
    if rule is MaskRule.PHONE:
        return mask_phone(value)
    if rule is MaskRule.INITIAL:
        return mask_initial(value)
    return "***"


@dataclass(slots=True)
class _Node:
    """The rules below one field: its own rule, or its fields' (``items``: a list's items)."""

    rule: MaskRule | None = None
    fields: dict[str, _Node] = field(default_factory=dict)
    items: bool = False


def compile_policy(policy: Mapping[str, MaskRule]) -> _Node:
    """The tree of ``policy``'s paths; a path that does not parse is a ``ValueError``."""
    root = _Node()
    for path, rule in policy.items():
        if not MASK_PATH.fullmatch(path):
            raise ValueError(f"masking path {path!r} is not like buyer.email or orders[].email")
        node = root
        for segment in path.split("."):
            name = segment.removesuffix("[]")
            node = node.fields.setdefault(name, _Node())
            if segment.endswith("[]"):
                node.items = True
        node.rule = MaskRule(rule)
    return root


@lru_cache(maxsize=64)
def _compiled(policy: tuple[tuple[str, MaskRule], ...]) -> _Node:
    return compile_policy(dict(policy))


def _apply(data: Any, node: _Node) -> Any:
    if isinstance(data, list):
        return [_apply(item, node) for item in data] if node.items else data
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = {}
    fields = node.fields
    for key, value in data.items():
        below = fields.get(key)
        if below is None:
            out[key] = value
        elif below.rule is MaskRule.DROP:
            continue
        elif below.rule is not None:
            out[key] = mask_value(below.rule, value)
        else:
            out[key] = _apply(value, below)
    return out


def mask_payload(data: Any, policy: Mapping[str, MaskRule]) -> Any:
    """A copy of ``data`` (dicts, lists, scalars) with each field a path of ``policy`` names
    masked by its rule; ``drop`` removes the field. The input is never modified."""
    if not policy:
        return data
    return _apply(data, _compiled(tuple(policy.items())))


def mask_for_channel(config: ExperienceConfig, channel: str, data: Any) -> Any:
    """``mask_payload`` with the channel's configured policy (for logs and partner webhooks)."""
    return mask_payload(data, config.masking_for(channel))
