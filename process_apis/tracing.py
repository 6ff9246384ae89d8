"""One span per business step (``with step("erp.create_order"):``) on the installed tracer."""

from __future__ import annotations

from system_apis.observe import step

__all__ = ["step"]
