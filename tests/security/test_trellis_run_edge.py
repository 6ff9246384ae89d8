"""The edge limits hold on the server `trellis run` starts, configured from gateway.yaml."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR
from tests.servers import free_port

pytestmark = pytest.mark.slow  # subprocesses or real timeouts: not in make test-fast

BOUND_S = 8.0


def exchange(port: int, data: bytes, bound: float = BOUND_S) -> tuple[bytes, float]:
    """Send ``data``, read until the server closes; the answer and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=bound) as s:
        try:
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks), time.monotonic() - started


def test_limits_from_gateway_yaml_hold_on_trellis_run(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "TRELLIS_GATEWAY__DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_OAUTH__KEYS_DIR": str(tmp_path / "keys"),
        "TRELLIS_GATEWAY__SERVER__HEADER_TIMEOUT_S": "1",
        "TRELLIS_GATEWAY__SERVER__KEEP_ALIVE_S": "1",
    }
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway.cli", "run", "--no-sandbox"),
            *("--config", str(cfg), "--port", str(port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # /readyz needs the backends: /healthz will do
            try:
                answer, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            except OSError:  # not listening yet
                answer = b""
            if answer.startswith(b"HTTP/1.1 200 "):
                break
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            time.sleep(0.2)
        # a 100 KB header: 431, not parsed
        big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        answer, took = exchange(port, big)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        # a silent connection and a partial head: closed after the header timeout
        answer, took = exchange(port, b"")
        assert answer == b"" and took < BOUND_S
        answer, took = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert answer.startswith(b"HTTP/1.1 408 ") and took < BOUND_S
        # an idle keep-alive connection: closed after keep_alive_s
        answer, took = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and took < BOUND_S
        # a Host nobody configured: refused, never redirected to
        answer, _ = exchange(
            port, b"GET /healthz/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 400 ") and b"evil.example" not in answer
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
