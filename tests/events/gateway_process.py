"""A whole gateway process (uvicorn serving ``create_app``), for crash and multi-process tests.

``python -m tests.events.gateway_process <settings.json>``: the JSON holds ``load_settings``
overrides; the process prints ``ready <port>`` once the gateway (and so its event bus) has
started, and runs until killed (SIGKILL in the crash tests) or stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.settings import load_settings
from tests import crm_swap
from tests.eventually import eventually


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(path: Path) -> None:
    overrides: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
    data_dir = overrides.get("gateway", {}).get("data_dir", "var")
    overrides.setdefault("oauth", {}).setdefault("keys_dir", str(Path(data_dir) / "keys"))
    settings = load_settings(crm_swap.config_dir(), **overrides)
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), timeout=60, interval=0.02)
    if task.done():
        task.result()  # raises the startup error
        return
    print(f"ready {port}", flush=True)
    await task  # uvicorn stops gracefully on SIGTERM


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
