"""Rendering shared by the channels: masked JSON, strong ETags and conditional GETs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from .config import MaskRule
from .masking import mask_payload

__all__ = ["etag_of", "masked_json", "not_modified", "to_data"]


def to_data(content: Any) -> Any:
    """Models (also nested) to JSON-ready data, so masking sees plain dicts and lists."""
    if isinstance(content, BaseModel):
        return content.model_dump(mode="json")
    if isinstance(content, list):
        return [to_data(c) for c in content]
    if isinstance(content, Mapping):
        return {k: to_data(v) for k, v in content.items()}
    return content


def render(data: Any) -> bytes:
    return orjson.dumps(data)


def masked_json(
    content: Any,
    policy: Mapping[str, MaskRule],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    body = render(mask_payload(to_data(content), policy))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def etag_of(body: bytes) -> str:
    """A strong validator: the body's digest (same bytes, same tag)."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def not_modified(request: Request, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison, ``*`` matches any current representation."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags
