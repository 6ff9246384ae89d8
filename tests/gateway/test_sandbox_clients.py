"""The shipped sandbox clients: between them they can try every documented endpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.openapi import SCOPE_DESCRIPTIONS
from gateway.settings import DEFAULT_CONFIG_DIR, Settings, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def shipped() -> Settings:
    return load_settings(DEFAULT_CONFIG_DIR)


def test_every_scope_is_held_by_a_sandbox_client(shipped: Settings) -> None:
    held = {scope for client in shipped.clients.values() for scope in client.scopes}
    assert set(SCOPE_DESCRIPTIONS) <= held, set(SCOPE_DESCRIPTIONS) - held


def test_readme_lists_every_sandbox_client(shipped: Settings) -> None:
    row = re.compile(r"^\| ([a-z0-9-]+) \| ([a-z:_ -]+) \| ([a-z-]+) \|$", re.M)
    rows = row.findall(README.read_text())
    listed = {cid: (scopes.split(), tier) for cid, scopes, tier in rows}
    for client_id, client in shipped.clients.items():
        assert listed.get(client_id) == (sorted(client.scopes), client.tier), client_id
