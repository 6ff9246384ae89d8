"""Garbage-collector settings for a long-running gateway process.

After startup the heap holds ~100k long-lived objects (config, pydantic schemas, OpenAPI,
routes, keys). CPython's full collection walks all of them: ~40 ms on this machine, a pause
every request in flight waits out, which showed as the p99 of every scenario
(docs/performance.md). Freezing the startup heap moves it out of the collector's view
(``gc.freeze``); collections then walk only what requests made since. A larger first-generation
threshold collects the short-lived garbage of requests less often.
"""

from __future__ import annotations

import gc
import logging

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("trellis.gateway")


class GcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    freeze_after_startup: bool = Field(
        True, description="gc.freeze() once the lifespan has started: no full-heap pauses."
    )
    threshold: tuple[int, int, int] | None = Field(
        (7000, 20, 20),
        description="gc.set_threshold() for the process; null keeps CPython's (700, 10, 10).",
    )


def tune_after_startup(settings: GcSettings) -> None:
    """Apply ``settings`` once the app has started (call it at the end of the lifespan start)."""
    if settings.threshold is not None:
        gc.set_threshold(*settings.threshold)
    if settings.freeze_after_startup:
        gc.collect()  # what startup left as garbage goes now, not into the frozen heap
        gc.freeze()
        log.debug("startup heap frozen", extra={"objects": gc.get_freeze_count()})


def unfreeze() -> None:
    """At shutdown: give the frozen objects back to the collector (tests start many apps)."""
    gc.unfreeze()
