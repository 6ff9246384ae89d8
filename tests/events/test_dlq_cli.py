"""`trellis dlq list|show|replay|discard` on the SQLite store, with no gateway running."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.events.records import DeadLetterQuery
from tests.events.conftest import BusFactory
from tests.events.helpers import FAST, event, hook, receiver, write_outbox
from tests.eventually import eventually

pytestmark = pytest.mark.slow  # `trellis dlq` subprocesses and delivery retries

ROOT = Path(__file__).resolve().parents[2]
ENTRY = (
    "import argparse, sys\n"
    "from gateway.events.cli import add_dlq_commands\n"
    "p = argparse.ArgumentParser(prog='trellis')\n"
    "add_dlq_commands(p.add_subparsers(dest='command', required=True))\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "sys.exit(a.func(a))\n"
)


def trellis(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRELLIS_GATEWAY__DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT)}
    env.pop("TRELLIS_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_dlq_commands(make_bus: BusFactory, tmp_path: Path) -> None:
    async with receiver(always_fail=True) as rec:
        cfg = {"outbound_webhooks": {"t": hook(rec.url, **{**FAST, "max_attempts": 1})}}
        first, second = event(), event()
        async with make_bus(cfg) as bus:
            write_outbox(tmp_path / "data", [first, second])

            async def two_letters() -> bool:
                return len(await bus.store.dead_letters(DeadLetterQuery())) == 2

            await eventually(two_letters, message="two dead letters")

        listed = trellis(tmp_path, "dlq", "list", "--json", "--subscriber", "webhook:t")
        assert listed.returncode == 0, listed.stderr
        letters = {x["event_id"]: x for x in json.loads(listed.stdout)}
        assert set(letters) == {first.id, second.id}
        one, two = letters[first.id]["id"], letters[second.id]["id"]

        table = trellis(tmp_path, "dlq", "list", "--type", "test.happened")
        assert table.returncode == 0 and one in table.stdout and two in table.stdout

        shown = trellis(tmp_path, "dlq", "show", one)
        assert shown.returncode == 0 and json.loads(shown.stdout)["attempts"] == 1
        assert trellis(tmp_path, "dlq", "show", "dlq_missing").returncode == 1

        replayed = trellis(tmp_path, "dlq", "replay", one)
        assert replayed.returncode == 0 and f"{one}  replayed" in replayed.stdout
        discarded = trellis(tmp_path, "dlq", "discard", two, "--reason", "bad data")
        assert discarded.returncode == 0, discarded.stderr
        assert trellis(tmp_path, "dlq", "discard", two, "--reason", "again").returncode == 1
        assert trellis(tmp_path, "dlq", "replay", two).returncode == 1  # not dead any more

        rec.always_fail = False
        calls = len(rec.requests)
        async with make_bus(cfg):  # the next gateway to run delivers the replayed letter
            await rec.wait_for(lambda r: r.event_ids()[first.id] == 1)
            await asyncio.sleep(0.5)  # the window a second, duplicate delivery would arrive in
        assert len(rec.requests) == calls + 1
