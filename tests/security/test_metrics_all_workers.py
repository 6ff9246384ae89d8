"""/metrics counts every worker of the host, whichever worker answers the scrape: otherwise
each scrape shows one random worker's counters and ``rate()`` over them is wrong."""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from gateway.policies.worker_metrics import WORKERS_METRIC, dump, merge
from gateway.settings import DEFAULT_CONFIG_DIR
from tests.servers import free_port

pytestmark = pytest.mark.slow  # subprocesses or real timeouts: not in make test-fast


def _family(kind: str, name: str, value: float, **labels: str) -> object:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    family = cls(name, "doc", labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _values(families: list[object]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families
        for s in f.samples  # type: ignore[attr-defined]
    }


def test_merge_sums_counters_of_all_and_gauges_of_running_workers() -> None:
    def worker(requests: float, in_flight: float, breaker_open: float) -> dict[str, object]:
        return dump(
            [
                _family("counter", "trellis_http_requests", requests, route="/x"),
                _family("gauge", "trellis_http_requests_in_flight", in_flight),
                _family("gauge", "trellis_backend_breaker_state", breaker_open, backend="crm"),
            ]
        )

    own, running, finished = worker(5, 1, 0), worker(7, 2, 1), worker(11, 9, 1)
    values = _values(merge(own, [running], [finished]))
    assert values[("trellis_http_requests_total", (("route", "/x"),))] == 23  # all three
    assert values[("trellis_http_requests_in_flight", ())] == 3  # running only
    assert values[("trellis_backend_breaker_state", (("backend", "crm"),))] == 1  # the worst
    assert values[(WORKERS_METRIC, ())] == 2


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _healthz_total(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("trellis_http_requests_total{") and 'route="/healthz"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _workers(text: str) -> float:
    found = re.search(rf"^{WORKERS_METRIC} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_two_workers_one_metrics(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "TRELLIS_REDIS_URL": redis_url,
        "TRELLIS_GATEWAY__REDIS_PREFIX": redis_prefix,  # this test's keys only
        "TRELLIS_GATEWAY__DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_OAUTH__KEYS_DIR": str(tmp_path / "keys"),
    }
    args = ["run", "--config", str(cfg), "--port", str(port), "--workers", "2", "--no-sandbox"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        up = False
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not up:
            try:
                up = _get(base + "/healthz")[0] == 200
            except OSError:
                time.sleep(0.2)
        assert up, "the gateway did not start"
        basic = base64.b64encode(b"ops-admin:ops-admin-secret").decode()
        request = urllib.request.Request(
            base + "/oauth/token",
            data=b"grant_type=client_credentials",
            headers={"Authorization": f"Basic {basic}"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            bearer = {"Authorization": f"Bearer {json.load(r)['access_token']}"}
        workers = 0.0
        deadline = time.monotonic() + 40  # until the second worker has started too
        while workers < 2 and time.monotonic() < deadline:
            workers = _workers(_get(base + "/metrics", bearer)[1].decode())
            time.sleep(0.2)
        assert workers == 2

        def settled() -> list[tuple[float, float]]:
            # another worker's series are at most 1 s old: once every worker has written after
            # the last request, every scrape agrees, whichever worker answers it
            time.sleep(3)
            seen = []
            for _ in range(8):
                status, body = _get(base + "/metrics", bearer)
                assert status == 200, body
                seen.append((_healthz_total(body.decode()), _workers(body.decode())))
            return seen

        before = settled()
        assert len(set(before)) == 1, before  # the polls while starting, counted once
        for _ in range(40):  # a new connection each: the workers share them out
            assert _get(base + "/healthz")[0] == 200
        assert settled() == [(before[0][0] + 40, 2)] * 8
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
