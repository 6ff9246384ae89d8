"""Logs an attacker cannot flood and can be traced by: a client hanging up mid-body is an info
line without a traceback, and failed token requests name the claimed client and the address.

A real gateway process, its log stream (stderr, JSON lines) read after it stops."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SandboxThread

pytestmark = pytest.mark.slow  # subprocesses or real timeouts: not in make test-fast

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def gateway(sandbox: SandboxThread, tmp: Path) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A gateway process; yields its port and, after the block, its parsed log lines."""
    settings = {
        "gateway": {"sandbox": {"base_port": sandbox.base_port}, "data_dir": str(tmp / "data")},
        "oauth": {"keys_dir": str(tmp / "keys"), "generate_if_missing": True},
    }
    (tmp / "settings.json").write_text(json.dumps(settings))
    stderr = tmp / "stderr.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRELLIS_REDIS_URL", None)
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.events.gateway_process", str(tmp / "settings.json")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("ready "), stderr.read_text()
        yield int(ready.split()[1]), lines
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for raw in stderr.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))


def _raw_request(port: int, head: bytes, body: bytes, *, hang_up: bool = False) -> bytes:
    """Send, then read the answer until the server closes (or hang up at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + body)
        if hang_up:
            return b""
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _token_request(port: int, client_id: str, secret: str) -> bytes:
    body = b"grant_type=client_credentials"
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    head = (
        f"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {basic}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return _raw_request(port, head, body)


def test_disconnect_mid_body_is_info_without_traceback(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    with gateway(sandbox, tmp_path) as (port, lines):
        answer = _token_request(port, "orders-service", "orders-service-secret")
        access = json.loads(answer.split(b"\r\n\r\n", 1)[1])["access_token"]
        for _ in range(3):  # promises 1000 bytes, sends 10, hangs up
            head = (
                "POST /process/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {access}\r\nContent-Type: application/json\r\n"
                "Idempotency-Key: disconnect-test-0001\r\nContent-Length: 1000\r\n\r\n"
            ).encode()
            _raw_request(port, head, b'{"custome', hang_up=True)
    errors = [line for line in lines if line.get("level") in ("error", "critical")]
    assert errors == [], errors
    assert not any("Traceback" in json.dumps(line) for line in lines)
    gone = [line for line in lines if "disconnected" in line.get("message", "")]
    assert len(gone) == 3 and all(line["level"] == "info" for line in gone), gone


def test_failed_token_requests_name_claimed_client_and_address(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    with gateway(sandbox, tmp_path) as (port, lines):
        refused = _token_request(port, "ops-admin", "a-wrong-guess")
        assert refused.startswith(b"HTTP/1.1 401")
    access = [line for line in lines if line.get("logger") == "trellis.access"]
    token_lines = [line for line in access if line["route"] == "/oauth/token"]
    assert len(token_lines) == 1, access
    assert token_lines[0]["status"] == 401
    assert token_lines[0]["client_id"] == "ops-admin"
    assert token_lines[0]["client"] == "127.0.0.1"


def test_request_id_only_from_a_bounded_safe_charset(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """A caller's X-Request-ID is echoed and logged only when it is 8-128 characters of
    ``A-Za-z0-9._:-``; anything else (log-forging text, a huge value) is replaced."""
    offered = [
        b"abc",  # too short
        b"x" * 129,  # too long
        b"evil\x1b[2Jid-0001",  # terminal escapes
        b"id-0001 {json}",  # spaces and braces
        "id-\u00e9\u00e9\u00e9-0001".encode(),  # non-ASCII
    ]
    with gateway(sandbox, tmp_path) as (port, lines):
        echoed: list[bytes | None] = []  # None: the server refused the request itself
        for value in [*offered, b"good-id-0001"]:
            head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            answer = _raw_request(port, head + b"X-Request-ID: " + value + b"\r\n\r\n", b"")
            found = None
            for header in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                if header.lower().startswith(b"x-request-id:"):
                    found = header.split(b":", 1)[1].strip()
            echoed.append(found)
    assert echoed[-1] == b"good-id-0001"
    replaced = [got for got in echoed[:-1] if got is not None]
    assert len(replaced) >= 4, echoed
    for got in replaced:
        assert got not in offered and len(got) == 32 and got.isalnum(), got
    logged = [line["request_id"] for line in lines if line.get("logger") == "trellis.access"]
    assert logged[-1] == "good-id-0001"
    assert all(len(rid) == 32 for rid in logged[:-1]), logged
