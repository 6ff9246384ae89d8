"""Connectors: one vendor's implementation of a role, found through the ``trellis.connectors``
entry point group (``registry.py``); the six built-in ones are in ``builtin.py``."""

from .base import Connector
from .registry import GROUP, ConnectorError, UnknownConnector, connectors, get

__all__ = ["GROUP", "Connector", "ConnectorError", "UnknownConnector", "connectors", "get"]
