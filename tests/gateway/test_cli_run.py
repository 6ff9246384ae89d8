"""`trellis run` as a subprocess: sandbox + gateway start, /readyz answers, signals stop all."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR
from system_apis.config import BACKEND_NAMES
from tests.conftest import free_port_block
from tests.eventually import eventually_sync
from tests.servers import free_port

pytestmark = pytest.mark.slow  # `trellis run` subprocesses


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    """Until the gateway's /readyz answers 200; fail with its output if it died or never did."""

    def ready_or_exited() -> bool:
        return proc.poll() is not None or _get(f"http://127.0.0.1:{port}/readyz") == 200

    try:
        eventually_sync(ready_or_exited, timeout=timeout_s, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"not ready: {exc}") from None
    if proc.poll() is not None:
        output = proc.stdout.read() if proc.stdout else b""
        raise AssertionError(f"exited with {proc.returncode} before ready: {output!r}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def run_config(tmp_path: Path) -> tuple[Path, int, int]:
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    return cfg, free_port(), free_port_block(len(BACKEND_NAMES))


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
        wait_ready(proc, port, 40)
        assert all(_listening(base + i) for i in range(len(BACKEND_NAMES)))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.headers.get("server") is None  # the server software is not advertised
            assert r.headers["x-content-type-options"] == "nosniff"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        text = out.decode()
        assert proc.returncode == 0, text
        assert f"gateway    http://127.0.0.1:{port}" in text
        assert f"sandbox crm        http://127.0.0.1:{base + 1}" in text  # billing is first
        assert "trellis: stopped" in text
        assert not _listening(port)
        assert not any(
            _listening(base + i) for i in range(len(BACKEND_NAMES))
        )  # the sandbox stopped too
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


def test_sandbox_faults_from_config(run_config: tuple[Path, int, int]) -> None:
    """gateway.sandbox.faults is injected from the start by `trellis sandbox --config`."""
    cfg, _, base = run_config
    text = (cfg / "gateway.yaml").read_text()
    (cfg / "gateway.yaml").write_text(
        text.replace(
            "  base_port: 9101",
            f"  base_port: {base}\n  faults:\n"
            "    inventory: {fail_next: 2, error_statuses: [503]}",
        )
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "sandbox",
            "--base-port",
            str(base),
            "--config",
            str(cfg),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{base + 3}"  # inventory: 4th of the instance names, sorted
        eventually_sync(lambda: _get(url + "/__health") == 200, timeout=20, interval=0.1)
        stock = url + "/v1/stock/SKU-0001"
        request = urllib.request.Request(stock, headers={"X-Api-Key": "inv-sandbox-key"})

        def status() -> int:
            try:
                with urllib.request.urlopen(request, timeout=2) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert [status(), status(), status()] == [503, 503, 200]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert b"sandbox inventory  faults {" in out and b"'fail_next': 2" in out


def test_sandbox_serves_only_instances_marked_sandbox(
    run_config: tuple[Path, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance that points elsewhere gets no sandbox; the others keep their ports."""
    cfg, _, base = run_config
    monkeypatch.setenv("TRELLIS_INVENTORY_API_KEY", "a-real-warehouse-key")
    text = (cfg / "backends.yaml").read_text()
    old = "inventory:\n  sandbox: true\n"
    assert old in text
    (cfg / "backends.yaml").write_text(
        text.replace(old, "inventory:\n  sandbox: false\n  base_url: https://wms.example\n")
    )
    cmd = [sys.executable, "-m", "gateway.cli", "sandbox", "--base-port", str(base)]
    proc = subprocess.Popen(
        [*cmd, "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        support = f"http://127.0.0.1:{base + 6}"  # the last of the sorted instance names
        eventually_sync(lambda: _get(support + "/__health") == 200, timeout=20, interval=0.1)
        assert not _listening(base + 3)  # inventory's port
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert f"sandbox support    http://127.0.0.1:{base + 6}  (zendesk)".encode() in out
    assert b"sandbox inventory" not in out


def test_bad_sandbox_faults_config_names_the_key(run_config: tuple[Path, int, int]) -> None:
    cfg, _, _ = run_config
    text = (cfg / "gateway.yaml").read_text()
    (cfg / "gateway.yaml").write_text(
        text.replace(
            "  base_port: 9101", "  base_port: 9101\n  faults:\n    inventory: {latency: 5}"
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "config/gateway.yaml: sandbox.faults.inventory.latency: unknown key" in out.stderr


def test_several_workers_share_redis_stores(
    run_config: tuple[Path, int, int], tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """`--workers 2` with Redis: both workers serve, tokens from one validate on the other."""
    cfg, port, base = run_config
    env = {
        "PATH": "/usr/bin:/bin",
        "TRELLIS_REDIS_URL": redis_url,
        "TRELLIS_GATEWAY__REDIS_PREFIX": redis_prefix,
        "TRELLIS_GATEWAY__SANDBOX__BASE_PORT": str(base),
        "TRELLIS_GATEWAY__DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_OAUTH__KEYS_DIR": str(tmp_path / "keys"),
    }
    proc = subprocess.Popen(
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_ready(proc, port, 60)
        # new connections spread over both workers: every token must validate everywhere
        import base64
        import json

        basic = base64.b64encode(b"ops-admin:ops-admin-secret").decode()
        for _ in range(6):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/oauth/token",
                data=b"grant_type=client_credentials",
                headers={
                    "Authorization": f"Basic {basic}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                tok = json.loads(r.read())["access_token"]
            for _ in range(3):
                check = urllib.request.Request(
                    f"http://127.0.0.1:{port}/system/v1/inventory/stock/SKU-0003",
                    headers={"Authorization": f"Bearer {tok}"},
                )
                with urllib.request.urlopen(check, timeout=10) as r:
                    assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, out.decode()
        assert "workers: 2" in out.decode()
        assert not _listening(port)
        assert not any(_listening(base + i) for i in range(len(BACKEND_NAMES)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
