"""One gateway worker: ``python -m gateway.server.worker --fd N --parent P`` serves the app on the
listening socket N it inherited from ``trellis run`` (configuration from the environment)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time


def stop_when_orphaned(parent: int, interval_s: float = 1.0) -> None:
    """SIGTERM this process (a graceful stop) once ``parent`` is no longer its parent: a
    worker whose ``trellis run`` was killed outright does not serve on alone. The parent's
    pid comes from the parent itself, so a parent killed before this runs is noticed too."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway.server.worker")
    parser.add_argument("--fd", type=int, required=True, help="the inherited listening socket")
    parser.add_argument("--parent", type=int, required=True, help="the pid of trellis run")
    args = parser.parse_args(argv)
    stop_when_orphaned(args.parent)

    from gateway.app import create_app
    from gateway.settings import load_settings

    from .serving import BoundedServer, server_config

    settings = load_settings()
    gw = settings.gateway
    sock = socket.socket(fileno=args.fd)
    config = server_config(
        create_app(settings),
        gw.server,
        proxy_headers=False,  # gateway.edge.trusted_proxies decides, not uvicorn
        log_level=gw.log_level,
        access_log=False,
        server_header=False,  # no "server: uvicorn": nothing to fingerprint by
        lifespan="on",
    )
    BoundedServer(config, gw.server).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
