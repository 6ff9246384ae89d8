"""A store the gateway cannot use stops `trellis run` with one line naming the file and what
to do (exit 1, no traceback); keys the sandbox generates go under the data dir."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
from tests.conftest import SandboxThread
from tests.servers import free_port, serve

pytestmark = pytest.mark.slow  # `trellis run` subprocesses


def run(tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TRELLIS_GATEWAY__DATA_DIR": str(data_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--no-sandbox", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,  # relative paths of the shipped config land here, never in the repo
    )


def test_a_corrupt_store_stops_startup_naming_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "trellis.db"
    db.write_bytes(b"not a database at all, " * 400)
    out = run(tmp_path, data)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("trellis: cannot start")]
    assert str(db) in line and "backup" in line, line
    assert db.read_bytes().startswith(b"not a database")  # left as found, for the operator


def test_a_data_dir_that_cannot_be_written_stops_startup_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "occupied"
    blocker.write_text("a file where the data dir should be")
    out = run(tmp_path, blocker / "data")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("trellis: cannot start")]
    assert str(blocker) in line and "gateway.data_dir" in line, line


async def test_generated_keys_go_under_the_data_dir(
    sandbox: SandboxThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a relative keys dir would land
    data = tmp_path / "data"
    settings = load_settings(
        DEFAULT_CONFIG_DIR,
        gateway={"data_dir": str(data), "sandbox": {"base_port": sandbox.base_port}},
    )
    assert settings.oauth.keys_dir == data / "keys"
    async with serve(create_app(settings)):
        pass
    keys = list((data / "keys").glob("*.pem"))
    assert len(keys) == 1
    assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "keys").stat().st_mode) == 0o700
    assert not (tmp_path / "var").exists()
