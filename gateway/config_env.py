"""Environment overrides of the configuration: ``TRELLIS_<SECTION>__<KEY>__<SUBKEY>=value``.

Each ``TRELLIS_`` variable is resolved against the settings model before anything is applied.
One that names a setting becomes an override over the YAML files: JSON for a mapping, a list or
a section, the plain string otherwise (pydantic parses numbers, booleans and paths from it).
One that names no setting is left out and reported as a warning with the closest setting's
variable, since a misspelled override would otherwise be ignored in silence. Variables that
are read elsewhere (``NON_SETTING_VARIABLES``) and the ``${VAR}`` references of the files read
are not settings and are not warned about.

The same walk over the model maps a validation error's location back to the YAML key path (a
discriminated union's tag is not a key in the file).
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

PREFIX = "TRELLIS_"
DELIMITER = "__"

NON_SETTING_VARIABLES: Mapping[str, str] = {
    "TRELLIS_CONFIG_DIR": "the configuration directory (trellis run passes it to its workers)",
    "TRELLIS_REDIS_URL": "shares every store through Redis: sets gateway.redis_url",
    "TRELLIS_DATABASE_URL": "keeps the durable records in PostgreSQL: sets gateway.database_url",
    "TRELLIS_DOCS_SCREENSHOT": "tests: where the docs page test keeps its screenshot",
}
"""Every ``TRELLIS_`` variable the code reads that is not a setting, and what it does."""

NON_SETTING_PREFIXES: tuple[str, ...] = ("TRELLIS_TEST_",)
"""Prefixes reserved for the test suite's own variables (a Redis URL, a policy's config)."""

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Override:
    """One variable that names a setting: where it points and its decoded value."""

    variable: str
    path: tuple[str, ...]
    value: Any


@dataclass(frozen=True)
class BadOverride:
    """A variable that names a setting but whose value cannot be decoded (not valid JSON)."""

    variable: str
    path: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class EnvironmentOverrides:
    overrides: tuple[Override, ...]
    bad: tuple[BadOverride, ...]
    warnings: tuple[str, ...]

    def layer(self) -> dict[str, Any]:
        """The overrides as one nested mapping; a deeper variable wins over a whole section."""
        out: dict[str, Any] = {}
        for ov in sorted(self.overrides, key=lambda o: len(o.path)):
            node = out
            for key in ov.path[:-1]:
                child = node.get(key)  # copied: a variable's own value is never changed
                node[key] = child = dict(child) if isinstance(child, dict) else {}
                node = child
            node[ov.path[-1]] = ov.value
        return out

    def origin(self, path: Sequence[str | int]) -> Override | None:
        """The override that supplied the value at ``path``, if one did."""
        for ov in sorted(self.overrides, key=lambda o: -len(o.path)):
            n = len(ov.path)
            if tuple(str(p) for p in path[:n]) == ov.path and has_path(ov.value, path[n:]):
                return ov
        return None

    def beneath(self, path: Sequence[str | int]) -> list[str]:
        """Variables that override keys inside ``path`` (a rule over the whole may involve them)."""
        key = tuple(str(p) for p in path)
        return [ov.variable for ov in self.overrides if ov.path[: len(key)] == key]


def read_environment(
    model: type[BaseModel], environ: Mapping[str, str], referenced: Collection[str] = ()
) -> EnvironmentOverrides:
    """Sort the ``TRELLIS_`` variables of ``environ`` into overrides, bad values and warnings."""
    overrides: list[Override] = []
    bad: list[BadOverride] = []
    warnings: list[str] = []
    known = {name.upper() for name in (*NON_SETTING_VARIABLES, *referenced)}
    for variable, raw in sorted(environ.items()):
        upper = variable.upper()
        if not upper.startswith(PREFIX):
            continue
        path = tuple(variable[len(PREFIX) :].lower().split(DELIMITER))
        target = _resolve(model, path)
        if target is _NOWHERE:
            if upper not in known and not upper.startswith(NON_SETTING_PREFIXES):
                warnings.append(_unknown(model, variable, path, known))
            continue
        try:
            overrides.append(Override(variable, path, _decode(target, raw)))
        except ValueError as exc:
            bad.append(BadOverride(variable, path, f"not valid JSON ({exc})"))
    return EnvironmentOverrides(tuple(overrides), tuple(bad), tuple(warnings))


def file_path(model: type[BaseModel], loc: Sequence[str | int]) -> KeyPath:
    """A validation error's location as the key path in the files (union tags left out)."""
    node: Any = model
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            node = _item_type(node)
            continue
        named, any_key = _children(node)
        if part in named:
            node = named[part]
        elif any_key is not None:
            node = any_key
        elif (member := _tagged_member(node, part)) is not None:
            node = member  # the tag pydantic puts in the location of a discriminated union's error
            continue
        else:
            node = Any
        out.append(part)
    return tuple(out)


def dotted(path: Sequence[str | int]) -> str:
    """``a.b[0].c``, as keys are written in messages."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class _Nowhere:
    pass


_NOWHERE: Any = _Nowhere()


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union, an optional or an annotated type, flattened."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _is_model(member: Any) -> bool:
    return isinstance(member, type) and issubclass(member, BaseModel)


def _children(annotation: Any) -> tuple[dict[str, Any], Any]:
    """Named children (model fields) and the type under any key (a mapping), else None."""
    named: dict[str, Any] = {}
    any_key: Any = None
    for member in _members(annotation):
        if _is_model(member):
            for name, field in member.model_fields.items():
                named.setdefault(name, field.annotation)
        elif member is dict or _subclass(get_origin(member), Mapping):
            args = get_args(member)
            any_key = args[1] if len(args) == 2 else Any
    return named, any_key


def _item_type(annotation: Any) -> Any:
    for member in _members(annotation):
        args = get_args(member)
        if _subclass(get_origin(member), Sequence) and args:
            return args[0]
    return Any


def _tagged_member(annotation: Any, tag: str) -> Any:
    """The model of a union that one of its ``Literal`` fields tags with ``tag``, if any."""
    models = [m for m in _members(annotation) if _is_model(m)]
    for model in models if len(models) > 1 else ():
        for field in model.model_fields.values():
            if get_origin(field.annotation) is Literal and tag in get_args(field.annotation):
                return model
    return None


def _subclass(cls: Any, parent: type | tuple[type, ...]) -> bool:
    return isinstance(cls, type) and issubclass(cls, parent)


def _resolve(model: type[BaseModel], path: Sequence[str]) -> Any:
    node: Any = model
    for part in path:
        named, any_key = _children(node)
        if part in named:
            node = named[part]
        elif any_key is not None and part:
            node = any_key
        else:
            return _NOWHERE
    return node


def _decode(annotation: Any, raw: str) -> Any:
    """JSON for a container or a model (as pydantic-settings reads them), else the string."""
    members = [m for m in _members(annotation) if m is not type(None)]
    if not any(_is_container(m) for m in members):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        if str in members:
            return raw
        raise


def _is_container(member: Any) -> bool:
    if _is_model(member):
        return True
    cls = get_origin(member) or member
    return _subclass(cls, (Mapping, Sequence, set, frozenset)) and not _subclass(cls, (str, bytes))


def has_path(value: Any, rest: Sequence[str | int]) -> bool:
    """Whether nested mappings and lists ``value`` hold a value at key path ``rest``."""
    for part in rest:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return False
    return True


def _unknown(model: type[BaseModel], variable: str, path: Sequence[str], known: set[str]) -> str:
    message = f"environment variable {variable} matches no setting and is ignored"
    names = {name.removeprefix(PREFIX): name for name in known}
    wanted = variable.upper().removeprefix(PREFIX)
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.75)
    suggestion = [names[close[0]]] if close else []
    if not suggestion:
        corrected = _closest_path(model, path)
        suggestion = [PREFIX + DELIMITER.join(corrected).upper()] if corrected else []
    return f"{message}; did you mean {suggestion[0]}?" if suggestion else message


def _closest_path(model: type[BaseModel], path: Sequence[str]) -> list[str] | None:
    """``path`` with each unknown key replaced by the closest known one, if each has one."""
    node: Any = model
    out: list[str] = []
    for part in path:
        named, any_key = _children(node)
        if part not in named and any_key is not None and part:
            node = any_key
            out.append(part)
            continue
        if part not in named:
            close = difflib.get_close_matches(part, list(named), n=1)
            if not close:
                return None
            part = close[0]
        node = named[part]
        out.append(part)
    return out
