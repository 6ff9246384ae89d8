"""Run the sandbox of each instance with ``sandbox: true``: its connector's imitation of the
vendor, on the instance's port (``system_apis.config.sandbox_ports``), with fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from ..config import BackendConfig, sandbox_ports
from ..connectors import get
from . import seed
from .faults import Faults, FaultState, install_faults

AppFactory = Callable[[], web.Application]
FAULTS_KEY = web.AppKey("faults", FaultState)

DEFAULT_INSTANCES: Mapping[str, str] = {
    "crm": "salesforce",
    "erp": "sap",
    "billing": "stripe",
    "support": "zendesk",
    "marketing": "hubspot-marketing",
    "inventory": "inventory",
    "shipping": "rest",
}
"""The instances of the shipped configuration and their connectors (a ``rest`` one's sandbox
is made from its config: ``Sandbox.configs``)."""


def make_backend_app(
    name: str,
    faults: Faults | None = None,
    connector: str | None = None,
    config: BackendConfig | None = None,
) -> web.Application:
    """The sandbox app for one instance (its connector's, by default the shipped instance's;
    made from ``config`` where the connector's sandbox is per instance), with fault injection
    and control endpoints."""
    app = get(connector or DEFAULT_INSTANCES[name]).sandbox_app(config)
    state = FaultState(faults)
    app[FAULTS_KEY] = state
    install_faults(app, state)
    return app


def seed_crm(instances: Mapping[str, str]) -> str | None:
    """The CRM connector among ``instances`` (name -> connector) that the seed has ids for, when
    exactly one is served."""
    crms = {c for c in instances.values() if c in seed.CRM_IDS}
    return crms.pop() if len(crms) == 1 else None


@dataclass
class Sandbox:
    """The sandboxes of ``instances`` (instance name -> connector name); ``configs`` holds the
    configs of the instances whose sandbox is made from theirs."""

    host: str
    base_port: int
    instances: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_INSTANCES))
    fixed_ports: Mapping[str, int | None] = field(default_factory=dict)
    configs: Mapping[str, BackendConfig] = field(default_factory=dict)
    runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def ports(self) -> dict[str, int]:
        return sandbox_ports(self.base_port, self.instances, self.fixed_ports)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    async def start(self, faults: Mapping[str, Faults] | None = None) -> None:
        ports = self.ports
        for name, connector in self.instances.items():  # runners in the order given
            app = make_backend_app(
                name, (faults or {}).get(name), connector, self.configs.get(name)
            )
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, ports[name], reuse_address=True)
            await site.start()
            self.runners.append(runner)

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()


async def serve_forever(
    host: str,
    base_port: int,
    announce: Callable[[str], None] = print,
    faults: Mapping[str, Faults] | None = None,
    instances: Mapping[str, str] | None = None,
    fixed_ports: Mapping[str, int | None] | None = None,
    configs: Mapping[str, BackendConfig] | None = None,
) -> None:
    """Start every instance's sandbox, announce where each listens, run until SIGINT/SIGTERM.

    The other systems' seed records cross-reference the CRM served (when exactly one is).
    """
    sandbox = Sandbox(
        host, base_port, dict(instances or DEFAULT_INSTANCES), fixed_ports or {}, configs or {}
    )
    if crm := seed_crm(sandbox.instances):
        seed.use_crm(crm)
    # a stop signal counts from before the first sandbox listens: one that arrives while the
    # others start (a caller saw the first answer) still stops them all in order
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await sandbox.start(faults)
        for name, connector in sorted(sandbox.instances.items()):
            announce(f"sandbox {name:<10} {sandbox.url(name)}  ({connector})")
        await stop.wait()
    finally:
        await sandbox.stop()
