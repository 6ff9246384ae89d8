"""The process and experience layers name no vendor: which CRM (or any system) serves a role is
configuration, so no code, comment or docstring there may assume one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("process_apis", "experience_apis")
VENDORS = re.compile(r"salesforce|hubspot|sfdc", re.IGNORECASE)


def test_no_vendor_is_named_in_the_process_or_experience_layers() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for layer in LAYERS
        for path in sorted((ROOT / layer).rglob("*"))
        if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".json", ".txt"}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if VENDORS.search(line)
    ]
    assert found == []


def test_the_scan_sees_the_layers() -> None:
    for layer in LAYERS:
        assert any((ROOT / layer).rglob("*.py")), layer
