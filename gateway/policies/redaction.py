"""Redaction rules for anything written to logs: personal data, card numbers, credentials.

Applied by the JSON log formatter to the message, its arguments and every extra field, so it
holds for whatever the code logs, not only for call sites that remember to scrub. Text is
scrubbed by pattern (emails, phone numbers, Luhn-valid card numbers, bearer tokens, JWTs,
``password=...`` pairs); structured values are also scrubbed by key (``password``,
``secret``, ``token``, ``authorization``...), whatever the value looks like.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

SENSITIVE_KEY_PARTS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "cookie",
    "private_key",
)
"""A key containing any of these (case-insensitive) has its whole value redacted."""

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY_VALUE = re.compile(
    r"""(?ix)
    \b([\w-]*(?:password|passwd|secret|token|authorization|api[_-]?key)[\w-]*)  # the key
    (["']?\s*[:=]\s*["']?)                                                   # = or :, quotes
    (?:(?:bearer|basic)\s+)?                                                 # auth scheme
    ([^\s"',;&}]+)                                                           # the value
    """
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w.-])")
_PHONE = re.compile(
    r"""(?x)
    (?<![\w+.-])
    (?:
        \+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}      # international: +44 20 7946 0958
      | \(\d{3}\)[ .-]?\d{3}[ .-]\d{4}             # (555) 123-4567
      | \d{3}[.-]\d{3}[.-]\d{4}                    # 555-123-4567
    )
    (?![\w.-])
    """
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum card numbers carry; it keeps order ids and timestamps unredacted."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_digits(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _card(match: re.Match[str]) -> str:
    return "[CARD]" if _card_digits(match.group(0)) else match.group(0)


def _phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "[PHONE]" if 7 <= digits <= 15 else match.group(0)


_MAYBE = re.compile(r"eyJ|@|[=:]|(?i:bearer|basic)|\d[\d ().+-]{5,}\d")
"""Anything any rule could match; most log strings (ids, routes, names) fail it in one scan."""


def redact_text(text: str) -> str:
    """``text`` with credentials, emails, card numbers and phone numbers replaced."""
    if not _MAYBE.search(text):
        return text
    text = _JWT.sub("[JWT]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if "@" in text:
        text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(key: str, extra_keys: tuple[str, ...] = ()) -> bool:
    """True for keys whose values are credentials whatever they look like (cached: log
    records repeat the same few keys)."""
    lowered = key.lower()
    return any(part in lowered for part in SENSITIVE_KEY_PARTS) or any(
        part in lowered for part in extra_keys
    )


def redact(value: Any, extra_keys: tuple[str, ...] = (), _depth: int = 0) -> Any:
    """A scrubbed copy of ``value``: mappings by key and by text, sequences item by item.

    Other objects are rendered with ``str`` and scrubbed as text, since a formatter would
    print them that way anyway. Deeply nested data is cut at 8 levels.
    """
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if kind is int:  # a card number passed as an int
        return "[CARD]" if value >= 10**12 and _card_digits(str(value)) else value
    if value is None or kind is bool or kind is float:
        return value
    if _depth >= 8:
        return "[...]"
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED
            if is_sensitive_key(str(k), extra_keys)
            else redact(v, extra_keys, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, extra_keys, _depth + 1) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return redact_text(str(value))
