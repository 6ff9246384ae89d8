"""An alert endpoint that is down when a delivery is dead-lettered still gets the alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.events.conftest import BusFactory, make_bus  # noqa: F401  (the fixture)
from tests.events.helpers import FAST, dead_letters, event, hook, receiver, write_outbox

pytestmark = pytest.mark.slow


async def test_a_failing_alert_endpoint_is_retried_with_backoff_until_it_answers(
    make_bus: BusFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with receiver(always_fail=True) as rec, receiver(fail_first=2, status=502) as alerts:
        cfg = {
            "outbound_webhooks": {"t": hook(rec.url, **FAST)},
            "alerts": {
                "webhook_url": alerts.url,
                "timeout_s": 2,
                "retry": {"max_attempts": 4, "base_delay_s": 0.2, "max_delay_s": 0.5},
            },
        }
        async with make_bus(cfg) as bus:
            ev = event()
            write_outbox(tmp_path / "data", [ev])
            [letter] = await dead_letters(bus)
            await alerts.wait_for(lambda r: any(q["ok"] for q in r.requests))
            assert [q["ok"] for q in alerts.requests] == [False, False, True]
            assert {b["dead_letter_id"] for b in alerts.bodies()} == {letter.id}
            gaps = [b - a for a, b in zip(alerts.times, alerts.times[1:], strict=False)]
            assert all(g >= 0.2 - 0.01 for g in gaps), gaps  # backoff, not a hot loop
            assert bus.alerts.history[-1].outcome == "webhook 502; retrying"
