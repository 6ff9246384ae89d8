"""Run the six sandbox backends on consecutive ports (base_port + index in BACKEND_NAMES)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module

from aiohttp import web

from ..config import BACKEND_NAMES
from .faults import Faults, FaultState, install_faults

AppFactory = Callable[[], web.Application]
FAULTS_KEY = web.AppKey("faults", FaultState)


def make_backend_app(name: str, faults: Faults | None = None) -> web.Application:
    """The sandbox app for one backend, with fault injection and control endpoints."""
    module = import_module(f"system_apis.sandbox.{name}")
    app: web.Application = module.create_app()
    state = FaultState(faults)
    app[FAULTS_KEY] = state
    install_faults(app, state)
    return app


@dataclass
class Sandbox:
    host: str
    base_port: int
    runners: list[web.AppRunner] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.base_port + BACKEND_NAMES.index(name)}"

    async def start(self, faults: dict[str, Faults] | None = None) -> None:
        for i, name in enumerate(BACKEND_NAMES):
            app = make_backend_app(name, (faults or {}).get(name))
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.base_port + i, reuse_address=True)
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
    faults: dict[str, Faults] | None = None,
) -> None:
    """Start every backend, announce where each listens, run until SIGINT/SIGTERM."""
    sandbox = Sandbox(host, base_port)
    await sandbox.start(faults)
    for name in BACKEND_NAMES:
        announce(f"sandbox {name:<10} {sandbox.url(name)}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sandbox.stop()
