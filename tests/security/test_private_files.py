"""Every file the gateway writes is private to it (0600) in private directories (0700),
whatever the umask: the stores hold revocations, idempotency records, cross-references and
events with personal data, and the keys directory holds the signing key."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default: files 0644, directories 0755
    yield
    os.umask(previous)


def _modes(root: Path) -> dict[str, tuple[bool, int]]:
    """Each path below ``root`` (and itself): whether it is a directory, and its mode."""
    found = {}
    for path in [root, *root.rglob("*")]:
        info = path.stat()
        found[str(path)] = (stat.S_ISDIR(info.st_mode), stat.S_IMODE(info.st_mode))
    return found


async def test_data_and_key_files_are_private(
    sandbox: SandboxThread, tmp_path: Path, open_umask: None
) -> None:
    settings = test_settings(sandbox.base_port, tmp_path)
    data_dir, keys_dir = tmp_path / "data", tmp_path / "keys"
    async with serve(create_app(settings)) as url:
        access = await token(url, "test-everything")
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{url}/oauth/revoke",
                data={"token": access},
                headers={
                    "Authorization": aiohttp.encode_basic_auth(
                        "test-everything", "test-everything-secret"
                    )
                },
            ) as r,
        ):
            assert r.status == 200
        modes = {**_modes(data_dir), **_modes(keys_dir)}
    names = {Path(p).name for p in modes}
    assert any(n.endswith(".pem") for n in names), names  # a key was generated
    assert any(n.endswith(".db") for n in names), names  # the stores were created
    loose = {
        path: oct(mode)
        for path, (is_dir, mode) in modes.items()
        if mode != (0o700 if is_dir else 0o600)
    }
    assert not loose, loose
