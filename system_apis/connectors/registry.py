"""The connectors installed: every ``trellis.connectors`` entry point, loaded once.

A package adds a connector by being installed with an entry point in that group whose name is
the connector's name and whose object is a ``Connector`` (or a function returning one)::

    [project.entry-points."trellis.connectors"]
    acme-crm = "acme_trellis.connector:connector"

The built-in connectors register the same way, in Trellis's own ``pyproject.toml``.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any

from .base import Connector

GROUP = "trellis.connectors"


class ConnectorError(Exception):
    """An installed entry point does not give a usable connector."""


class UnknownConnector(LookupError):
    """No installed connector has this name; ``hint`` names the closest one, if any."""

    def __init__(self, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=1)
        self.hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(f"unknown connector {name!r}; {self.hint}installed: {known}")
        self.name = name
        self.known = known


def _load(ep: EntryPoint) -> Connector[Any]:
    where = f"entry point {ep.name!r} = {ep.value!r} (group {GROUP})"
    try:
        obj = ep.load()
    except Exception as exc:  # a broken third-party package: say which one, not a traceback
        raise ConnectorError(f"{where}: cannot load: {exc!r}") from exc
    if not isinstance(obj, Connector) and callable(obj):
        obj = obj()
    if not isinstance(obj, Connector):
        raise ConnectorError(f"{where}: not a Connector but {type(obj).__name__}")
    if obj.name != ep.name:
        raise ConnectorError(f"{where}: names its connector {obj.name!r}")
    return obj


@functools.cache
def connectors() -> Mapping[str, Connector[Any]]:
    """Every installed connector by name (loaded on first use, then kept)."""
    found: dict[str, Connector[Any]] = {}
    for ep in entry_points(group=GROUP):
        connector = _load(ep)
        if ep.name in found and found[ep.name] is not connector:
            raise ConnectorError(f"two installed packages provide the connector {ep.name!r}")
        found[ep.name] = connector
    return MappingProxyType(dict(sorted(found.items())))


def get(name: str) -> Connector[Any]:
    """The installed connector of this name, or ``UnknownConnector`` with the closest match."""
    known = connectors()
    try:
        return known[name]
    except KeyError:
        raise UnknownConnector(name, list(known)) from None
