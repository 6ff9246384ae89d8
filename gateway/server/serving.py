"""uvicorn, configured from gateway.yaml: the guarded protocol, keep-alive and drain timeouts,
and a server whose shutdown is bounded in time."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from .config import ServerLimits
from .protocols import guarded_protocol

log = logging.getLogger("trellis.server")

FORCED_EXIT = 70
"""A worker's exit status when its shutdown outlived the grace period and it ended itself."""


def server_config(app: ASGIApp, limits: ServerLimits, **options: Any) -> uvicorn.Config:
    """A uvicorn config serving ``app`` under ``limits``; ``options`` are uvicorn's own."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        ws="none",  # the gateway serves no websockets: no upgrade path to guard
        # uvicorn uses both as seconds (call_later, wait_for): fractions work
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=math.ceil(limits.drain_s),
        # h11 buffers an incomplete head up to this (16 KB by default): the head limit is ours
        h11_max_incomplete_event_size=limits.max_header_bytes + 4,
        **options,
    )


class BoundedServer(uvicorn.Server):
    """uvicorn's server, whose shutdown ends in ``shutdown_grace_s`` whatever it waits for.

    The first SIGTERM/SIGINT starts uvicorn's graceful shutdown (requests in flight get
    ``drain_s``, then the app's lifespan closes) and a timer: if the process is still alive
    when the grace period is over, it runs ``before_forced_exit`` (``trellis run`` with one
    worker kills its sandbox there) and ends itself with status ``FORCED_EXIT``. A second
    signal skips the waiting.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        limits: ServerLimits,
        before_forced_exit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.limits = limits
        self.before_forced_exit = before_forced_exit
        self.stop_signal_at: float | None = None
        """When the first stop signal arrived (monotonic)."""
        self._deadline: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._deadline is None:
            self.stop_signal_at = time.monotonic()
            self._deadline = threading.Timer(self.limits.shutdown_grace_s, self._end_now)
            self._deadline.daemon = True
            self._deadline.start()
        elif not self.force_exit:
            log.warning("second stop signal: not waiting for requests in flight")
            self.force_exit = True
        super().handle_exit(sig, frame)

    def _end_now(self) -> None:
        log.error("shutdown outlived the grace period: exiting now")
        try:
            if self.before_forced_exit is not None:
                self.before_forced_exit()
        finally:
            logging.shutdown()
            os._exit(FORCED_EXIT)
