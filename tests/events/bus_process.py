"""A process running only the event bus (no HTTP), for crash and multi-process tests.

``python -m tests.events.bus_process <settings.json>``: the JSON holds ``load_settings``
overrides; the process prints ``ready`` once delivering and runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from gateway.events.component import EventBus
from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
from system_apis.registry import SystemApis


async def main(path: Path) -> None:
    overrides = json.loads(await asyncio.to_thread(path.read_text))
    settings = load_settings(DEFAULT_CONFIG_DIR, **overrides)
    systems = SystemApis.from_config(settings.backends, settings.backend_url)
    bus = EventBus(settings, systems, subscribers={})
    await bus.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
