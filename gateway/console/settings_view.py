"""The effective configuration as the console shows it: every value, secrets redacted, and
where it came from.

A value's source is ``environment`` when a ``TRELLIS_SECTION__KEY`` variable (or
``TRELLIS_REDIS_URL`` for ``gateway.redis_url``) sets it, ``file`` when the section's YAML
file in the configuration directory holds that value, ``code`` when it was set otherwise (the
program that loaded the settings passed it), else ``default``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from gateway.policies.redaction import REDACTED, is_sensitive_key, redact_text
from gateway.settings import Settings, default_config_dir, read_config_dir

_URL_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


@dataclass(frozen=True, slots=True)
class ConfigRow:
    key: str
    value: str
    source: str


def config_dir_in_use() -> Path:
    """The directory ``load_settings`` reads when not given one."""
    return Path(os.environ.get("TRELLIS_CONFIG_DIR") or default_config_dir())


def _explicit(model: Any) -> Any:
    """The keys set on purpose (file, environment or code) as a nested mapping."""
    if isinstance(model, BaseModel):
        return {name: _explicit(getattr(model, name)) for name in model.model_fields_set}
    if isinstance(model, Mapping):
        return {str(k): _explicit(v) for k, v in model.items()}
    return True


_MISSING = object()


def _at(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(tree, Mapping) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _has(tree: Any, path: tuple[str, ...]) -> bool:
    return _at(tree, path) is not _MISSING


_PLAIN = (str, int, float, bool, type(None))


def _same(in_file: Any, shown: Any) -> bool:
    """Whether the file's value is the effective one. Only a plain value that differs tells
    that something else set it: a secret is masked, lists and dates are rendered anew."""
    if shown == _MASKED or not isinstance(in_file, _PLAIN) or not isinstance(shown, _PLAIN):
        return True
    return bool(in_file == shown)


def _leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    else:
        yield path, value


_MASKED = "**********"
"""How pydantic renders a ``SecretStr``."""


def _shown(path: tuple[str, ...], value: Any) -> str:
    if value == _MASKED:
        return REDACTED
    # numbers and flags (a token lifetime) are never secrets; a URL (``token_url``) is shown
    # with any user:password in it masked
    if (
        isinstance(value, str)
        and not path[-1].endswith("url")
        and any(is_sensitive_key(part) for part in path)
    ):
        return REDACTED
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return redact_text(_URL_USERINFO.sub(REDACTED + "@", text))


def config_rows(settings: Settings, config_dir: Path | None = None) -> list[ConfigRow]:
    files = read_config_dir(config_dir or config_dir_in_use()).data
    explicit = _explicit(settings)
    rows = []
    for path, value in _leaves(settings.model_dump(mode="json"), ()):
        env = "TRELLIS_" + "__".join(path).upper()
        if (
            env in os.environ
            or (path == ("gateway", "redis_url") and "TRELLIS_REDIS_URL" in os.environ)
            or (path == ("gateway", "database_url") and "TRELLIS_DATABASE_URL" in os.environ)
        ):
            source = "environment"
        elif (in_file := _at(files, path)) is not _MISSING and _same(in_file, value):
            source = "file"
        elif _has(explicit, path):
            source = "code"
        else:
            source = "default"
        rows.append(ConfigRow(".".join(path), _shown(path, value), source))
    return rows
