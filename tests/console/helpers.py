"""Helpers of the console tests."""

from __future__ import annotations

import time

import requests


def wait_dead_letter(url: str, token: str, event_id: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        r = requests.get(
            f"{url}/admin/v1/dlq?type=test.happened",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        found = [x["id"] for x in r.json()["items"] if x["event_id"] == event_id]
        if found:
            return str(found[0])
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.2)
