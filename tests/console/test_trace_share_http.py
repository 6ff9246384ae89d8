"""The traces page across workers over HTTP: with Redis down the worker's own spans are still
found and the page says the others could not be asked; under ``trellis run --workers 2`` every
request is found, whichever worker the console's request lands on."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.console.trace_share import TraceShare
from gateway.settings import DEFAULT_CONFIG_DIR
from tests.console.test_console_http import sign_in
from tests.docs.live import GatewayThread
from tests.eventually import eventually_sync
from tests.servers import free_port


def _find(base: str, cookies: dict[str, str], key: str) -> str:
    """The traces page for ``key``, over a new connection (so any worker may answer)."""
    r = requests.get(
        base + "/console/traces",
        params={"q": key},
        cookies=cookies,
        headers={"Connection": "close"},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 200, r.text[:500]
    return r.text


def test_redis_down_still_finds_local_traces_and_says_so(
    console_gateway: GatewayThread, api_token: str
) -> None:
    app = console_gateway.app
    pages = app.console.pages
    dead = f"redis://127.0.0.1:{free_port()}/15"  # nothing listens there
    pages.share = TraceShare(app.observability.spans, dead, prefix="trellis-test-dead:")
    try:
        session = sign_in(console_gateway)
        cookies = session.cookies.get_dict()
        r = requests.get(
            console_gateway.url + "/system/v1/inventory/stock/SKU-0001",
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        page = _find(console_gateway.url, cookies, r.headers["x-request-id"])
        assert r.headers["x-trace-id"] in page and 'id="trace-elsewhere"' not in page
        started = time.monotonic()
        page = _find(console_gateway.url, cookies, "not-served-anywhere")
        assert time.monotonic() - started < 2.0
        assert 'id="trace-missing"' in page
        assert "the other workers could not be asked" in page
    finally:
        pages.share = None


@pytest.fixture
def two_workers(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[str]:
    """``trellis run --workers 2`` with Redis and recorded spans; its base URL."""
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "TRELLIS_REDIS_URL": redis_url,
        "TRELLIS_GATEWAY__REDIS_PREFIX": redis_prefix,  # this test's keys only
        "TRELLIS_GATEWAY__DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_OAUTH__KEYS_DIR": str(tmp_path / "keys"),
        "TRELLIS_OBSERVABILITY__CONSOLE__RECORD_SPANS": "true",
    }
    args = ["run", "--config", str(cfg), "--port", str(port), "--workers", "2", "--no-sandbox"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"

    def alive() -> bool:
        return requests.get(base + "/healthz", timeout=5).status_code == 200

    try:
        # not listening yet raises: eventually_sync tries again
        eventually_sync(alive, timeout=40, interval=0.2, message="the gateway started")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # a subprocess gateway: not in make test-fast
def test_every_request_is_found_whichever_worker_served_it(two_workers: str) -> None:
    base = two_workers
    r = requests.post(
        base + "/console/login",
        data={"client_id": "ops-admin", "client_secret": "ops-admin-secret"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text[:500]
    cookies = r.cookies.get_dict()
    local = elsewhere = 0
    deadline = time.monotonic() + 60
    # new connections each: the two workers share them out; until each kind was seen
    while (local < 3 or elsewhere < 3) and time.monotonic() < deadline:
        served = requests.get(base + "/docs", headers={"Connection": "close"}, timeout=10)
        assert served.status_code == 200
        request_id, trace_id = served.headers["x-request-id"], served.headers["x-trace-id"]
        page = _find(base, cookies, request_id)
        assert re.search(rf"<h2>Trace <code>{trace_id}</code>", page), page[-2000:]
        if 'id="trace-elsewhere"' in page:
            elsewhere += 1
        else:
            local += 1
    assert local >= 3 and elsewhere >= 3, (local, elsewhere)
    page = _find(base, cookies, "never-served")
    assert "nor by the other workers (2 of the 2 listening answered)" in page
