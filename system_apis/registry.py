"""All system API clients of one gateway worker, made from config and started in its lifespan.

Each instance of ``backends.yaml`` gets a client from its connector (its own pool, breaker,
limits and credentials); each role is served by the instance ``roles`` names, which is what the
process layer sees (``roles.Systems``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute

from .client import BackendClient
from .config import BackendConfig
from .connectors import Connector, get
from .roles import ROLE_NAMES, Billing, Crm, Erp, Inventory, Marketing, Support


def instance_role(name: str, config: BackendConfig) -> str | None:
    """The role an instance plays: declared, else its connector's first one."""
    if config.role is not None:
        return config.role
    connector = get(config.connector or name)
    return connector.roles[0] if connector.roles else None


def role_instances(
    backends: Mapping[str, BackendConfig], roles: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Which instance serves each role: as ``roles`` says, else the one instance playing it."""
    out = dict(roles or {})
    playing: dict[str, list[str]] = {}
    for name, config in backends.items():
        if (role := instance_role(name, config)) is not None:
            playing.setdefault(role, []).append(name)
    for role, names in playing.items():
        if role not in out and len(names) == 1:
            out[role] = names[0]
    return out


def _as(role: Any, client: BackendClient, name: str) -> Any:
    """The client, once checked to have the role's methods (a protocol is checked by name)."""
    if not isinstance(client, role):
        raise TypeError(f"instance {client.name!r} does not implement the {name} role")
    return client


@dataclass(frozen=True, slots=True)
class SystemApis:
    crm: Crm
    erp: Erp
    billing: Billing
    support: Support
    marketing: Marketing
    inventory: Inventory
    instances: Mapping[str, BackendClient]
    """Every instance's client by instance name, in the order of ``backends.yaml``."""
    connectors: Mapping[str, Connector[Any]]
    """Every instance's connector by instance name."""

    @classmethod
    def from_config(
        cls,
        backends: Mapping[str, BackendConfig],
        url_of: Callable[[str], str],
        roles: Mapping[str, str] | None = None,
    ) -> SystemApis:
        connectors = {name: get(cfg.connector or name) for name, cfg in backends.items()}
        clients = {
            name: connectors[name].make_client(cfg, url_of(name), name)
            for name, cfg in backends.items()
        }
        serving = role_instances(backends, roles)
        if missing := [r for r in ROLE_NAMES if serving.get(r) not in clients]:
            raise LookupError(f"no instance serves the role(s) {missing}")
        by_role = {role: clients[serving[role]] for role in ROLE_NAMES}
        return cls(
            crm=_as(Crm, by_role["crm"], "crm"),
            erp=_as(Erp, by_role["erp"], "erp"),
            billing=_as(Billing, by_role["billing"], "billing"),
            support=_as(Support, by_role["support"], "support"),
            marketing=_as(Marketing, by_role["marketing"], "marketing"),
            inventory=_as(Inventory, by_role["inventory"], "inventory"),
            instances=clients,
            connectors=connectors,
        )

    def all(self) -> dict[str, BackendClient]:
        return dict(self.instances)

    async def start(self) -> None:
        for client in self.instances.values():
            await client.start()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.instances.values()), return_exceptions=True)

    async def probe(self, timeout_s: float = 1.0) -> dict[str, str | None]:
        """Each backend's health: None when it answers, else why not. Probed concurrently."""
        clients = self.instances
        results = await asyncio.gather(*(c.ping(timeout_s) for c in clients.values()))
        return dict(zip(clients, results, strict=True))

    def routes(self) -> dict[str, list[BaseRoute]]:
        """The canonical HTTP view of each instance, to be mounted at /system/v1/{instance}."""
        return {
            name: self.connectors[name].routes(client) for name, client in self.instances.items()
        }
