"""The overview's time series: windows and quantiles from samples of the metrics series."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.console.history import History, quantile
from gateway.policies.metrics import GatewayMetrics, MetricsConfig
from gateway.policies.worker_metrics import WorkerMetricsShare
from gateway.stores.private_files import private_dir
from tests.eventually import eventually


def test_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    bounds = [0.1, 0.2, 0.4]
    # 10 in (0, 0.1], 10 in (0.1, 0.2], none above
    counts = [10.0, 10.0, 0.0, 0.0]
    assert quantile(0.5, bounds, counts) == pytest.approx(0.1)
    assert quantile(0.75, bounds, counts) == pytest.approx(0.15)
    assert quantile(0.99, bounds, counts) == pytest.approx(0.198)
    assert quantile(0.5, bounds, [0.0, 0.0, 0.0, 0.0]) is None
    # in +Inf: the highest finite bound, as histogram_quantile answers
    assert quantile(0.99, bounds, [0.0, 0.0, 0.0, 5.0]) == pytest.approx(0.4)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_windows_are_differences_between_samples() -> None:
    metrics = GatewayMetrics(MetricsConfig(latency_buckets=[0.01, 0.1, 1.0]))
    clock = Clock()
    history = History(metrics, interval_s=10, clock=clock)
    assert history.samples.maxlen == 361  # one hour of 10 s samples, plus the first
    for _ in range(50):  # before the window: must not count
        metrics.on_attempt("crm", "GET", 200, None, 0.5, 1, "closed")
    history.sample()
    for minute in range(6):
        clock.now += 60
        for _ in range(6):
            metrics.on_attempt("crm", "GET", 200, None, 0.005, 1, "closed")
        metrics.on_attempt("crm", "GET", 503, None, 0.05, 1, "closed")
        history.sample()
    five = history.window("backend", "crm", 300)
    # five minutes back from the newest: 5 x (6 ok + 1 failed) in 300 s
    assert five.count == 35
    assert five.rate == pytest.approx(35 / 300)
    assert five.error_ratio == pytest.approx(5 / 35)
    assert five.p50 is not None and five.p50 <= 0.01
    assert five.p99 is not None and 0.01 < five.p99 <= 0.1
    hour = history.window("backend", "crm", 3600)
    assert hour.count == 42 and hour.error_ratio == pytest.approx(6 / 42)
    assert history.window("backend", "erp", 300).count == 0
    series = history.series("backend", "crm", 300)
    assert len(series["t"]) == 5 and all(
        e == pytest.approx(100 / 7, abs=0.01) for e in series["err"]
    )


def test_the_ring_is_bounded() -> None:
    metrics = GatewayMetrics(MetricsConfig())
    clock = Clock()
    history = History(metrics, interval_s=60, clock=clock)
    for _ in range(500):
        clock.now += 60
        history.sample()
    assert len(history.samples) == 61


def test_requests_refusals_and_clients_come_from_the_request_counter() -> None:
    metrics = GatewayMetrics(MetricsConfig())
    clock = Clock()
    history = History(metrics, interval_s=10, clock=clock)
    history.sample()
    clock.now += 10
    metrics.requests.inc("/system/v1/crm/x", "GET", "200", "a")
    metrics.requests.inc("/system/v1/crm/x", "GET", "429", "b")
    metrics.requests.inc("/system/v1/crm/x", "GET", "502", "a")
    assert history.counts("refusals", 300) == {"b": 1.0}
    assert history.counts("client_requests", 300) == {"a": 2.0, "b": 1.0}
    stats = history.window("route", "/system/v1/crm/x", 300)
    assert stats.count == 3 and stats.error_ratio == pytest.approx(1 / 3)


async def test_with_workers_sharing_metrics_every_console_shows_the_hosts_numbers(
    tmp_path: Path,
) -> None:
    """Two workers' series in one shared directory: each worker's console sample is the sum a
    scrape of /metrics renders, not its own share of the traffic."""
    config = MetricsConfig(latency_buckets=[0.01, 0.1, 1.0])
    workers = [GatewayMetrics(config), GatewayMetrics(config)]
    shares = [WorkerMetricsShare(tmp_path / "metrics", interval_s=60) for _ in workers]
    shares[1].own = tmp_path / "metrics" / f"{os.getpid()}-1.json"  # two workers, one pid
    for metrics, share in zip(workers, shares, strict=True):
        metrics.share = share
    clock = Clock()
    history = History(workers[0], interval_s=10, clock=clock)
    await asyncio.to_thread(private_dir, tmp_path / "metrics")
    await history.take()

    for _ in range(3):
        workers[0].on_attempt("crm", "GET", 200, None, 0.005, 1, "closed")
    for _ in range(4):
        workers[1].on_attempt("crm", "GET", 503, None, 0.05, 1, "closed")
    workers[1].requests.inc("/system/v1/crm/x", "GET", "429", "b")
    await shares[1].start(workers[1].current)  # writes its file now, then every interval
    try:
        await eventually(shares[1].own.is_file, message="worker 1's series written")
    finally:
        await shares[1].close()
    clock.now += 10
    await history.take()

    crm = history.window("backend", "crm", 300)
    assert crm.count == 7 and crm.error_ratio == pytest.approx(4 / 7)
    assert crm.p50 is not None and 0.01 < crm.p50 <= 0.1  # most calls were worker 1's
    assert history.counts("refusals", 300) == {"b": 1.0}
    scraped = (await workers[0].scrape()).decode()
    assert 'trellis_backend_requests_total{backend="crm",method="GET",status="503"} 4.0' in (
        scraped
    )
    assert history.now() is history.samples[-1]
