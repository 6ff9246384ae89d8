"""Garbage-collector settings for a long-running gateway process.

After startup the heap holds ~100k long-lived objects (config, pydantic schemas, OpenAPI,
routes, keys). CPython's full collection walks all of them: ~40 ms on this machine, a pause
every request in flight waits out, which showed as the p99 of every scenario
(docs/performance.md). Freezing the startup heap moves it out of the collector's view
(``gc.freeze``); collections then walk only what requests made since. A larger first-generation
threshold collects less often: a first-generation collection walks what requests in flight hold
(the same ~10k objects whatever the threshold), so its cost per request falls with the threshold
(7,000 -> 50,000: ~3-4 µs a request, docs/performance.md); garbage is freed by reference
counting as before, only reference cycles wait longer.
"""

from __future__ import annotations

import gc
import logging

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger("trellis.gateway")


class GcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    freeze_after_startup: bool = Field(
        True, description="gc.freeze() once the lifespan has started: no full-heap pauses."
    )
    threshold: tuple[int, int, int] | None = Field(
        (50_000, 20, 20),
        description="gc.set_threshold() for the process; null keeps CPython's (700, 10, 10). "
        "A first value of 0 would switch automatic collection off: refused.",
    )

    @field_validator("threshold")
    @classmethod
    def _collecting(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and (value[0] <= 0 or min(value) < 0):
            raise ValueError("thresholds must be >= 0 and the first > 0 (0 stops collection)")
        return value


def tune_after_startup(settings: GcSettings) -> tuple[int, int, int]:
    """Apply ``settings`` once the app has started (call it at the end of the lifespan start);
    returns the thresholds it replaced, for ``restore``."""
    before = gc.get_threshold()
    if settings.threshold is not None:
        gc.set_threshold(*settings.threshold)
    if settings.freeze_after_startup:
        gc.collect()  # what startup left as garbage goes now, not into the frozen heap
        gc.freeze()
        log.debug("startup heap frozen", extra={"objects": gc.get_freeze_count()})
    return before


def restore(threshold: tuple[int, int, int]) -> None:
    """At shutdown: the collector as it was (tests start many apps in one process)."""
    gc.unfreeze()
    gc.set_threshold(*threshold)
