"""`trellis run` as a subprocess: sandbox + gateway start, /readyz answers, signals stop all."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR
from tests.conftest import free_port_block
from tests.servers import free_port


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def run_config(tmp_path: Path) -> tuple[Path, int, int]:
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    return cfg, free_port(), free_port_block(6)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_trellis_run_serves_and_stops_cleanly(
    run_config: tuple[Path, int, int], tmp_path: Path, sig: signal.Signals
) -> None:
    cfg, port, base = run_config
    env = {
        "PATH": "/usr/bin:/bin",
        "TRELLIS_GATEWAY__SANDBOX__BASE_PORT": str(base),
        "TRELLIS_GATEWAY__DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_OAUTH__KEYS_DIR": str(tmp_path / "keys"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 40
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = _get(f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status == 200, (proc.poll(), proc.stdout.read() if proc.poll() is not None else "")
        assert all(_listening(base + i) for i in range(6))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        text = out.decode()
        assert proc.returncode == 0, text
        assert f"gateway    http://127.0.0.1:{port}" in text
        assert f"sandbox crm        http://127.0.0.1:{base}" in text
        assert "trellis: stopped" in text
        assert not _listening(port)
        assert not any(_listening(base + i) for i in range(6))  # the sandbox stopped too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_invalid_config_refuses_to_start(run_config: tuple[Path, int, int]) -> None:
    cfg, port, _ = run_config
    (cfg / "gateway.yaml").write_text("port: 8000\nbogus: 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "config/gateway.yaml: bogus: unknown key" in out.stderr
    assert not _listening(port)


def test_several_workers_with_embedded_stores_refused(run_config: tuple[Path, int, int]) -> None:
    cfg, port, _ = run_config
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-sandbox",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 2
    assert "refusing to start 2 workers with embedded stores" in out.stderr
