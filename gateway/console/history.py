"""Time series for the overview: a bounded ring of samples of the counters ``/metrics`` reads.

Every ``interval_s`` the console copies the cumulative values of the gateway's request and
backend series (``GatewayMetrics``: the very objects the Prometheus exposition renders) into a
sample; rates, error ratios and latency quantiles over a window are differences between two
samples, computed the way Prometheus's ``rate`` and ``histogram_quantile`` do. The ring holds
one hour plus one sample, so its size is fixed by the interval.

With several workers sharing one ``/metrics`` (``GatewayMetrics.share``), a sample is taken
from the same merge of every worker's series a scrape renders, so every worker's console
shows the host's numbers, and they agree with ``/metrics`` (another worker's at most the
share's interval old).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from gateway.policies.metrics import GatewayMetrics

HOUR_S = 3600.0
WINDOWS_S: tuple[int, ...] = (300, 3600)


def _add(into: list[float], values: Sequence[float]) -> None:
    for i, v in enumerate(values):
        into[i] += v


@dataclass(slots=True)
class Sample:
    """Cumulative totals at ``at`` (wall-clock seconds), per backend, route and client."""

    at: float
    backend_calls: dict[str, float] = field(default_factory=dict)
    backend_errors: dict[str, float] = field(default_factory=dict)
    backend_latency: dict[str, list[float]] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)
    request_errors: dict[str, float] = field(default_factory=dict)
    request_latency: dict[str, list[float]] = field(default_factory=dict)
    refusals: dict[str, float] = field(default_factory=dict)
    client_requests: dict[str, float] = field(default_factory=dict)


class Counted(Protocol):
    @property
    def values(self) -> Mapping[tuple[str, ...], float]: ...


class Bucketed(Protocol):
    @property
    def bounds(self) -> Sequence[float]: ...

    @property
    def values(self) -> Mapping[tuple[str, ...], Sequence[float]]: ...


class Series(Protocol):
    """The request and backend series a sample reads (``GatewayMetrics`` has them)."""

    @property
    def requests(self) -> Counted: ...

    @property
    def latency(self) -> Bucketed: ...

    @property
    def backend_calls(self) -> Counted: ...

    @property
    def backend_errors(self) -> Counted: ...

    @property
    def backend_latency(self) -> Bucketed: ...


@dataclass(slots=True)
class _Counts:
    values: dict[tuple[str, ...], float] = field(default_factory=dict)


@dataclass(slots=True)
class _Buckets:
    bounds: Sequence[float]
    values: dict[tuple[str, ...], list[float]] = field(default_factory=dict)


@dataclass(slots=True)
class MergedSeries:
    """The series of ``metrics``, read back from merged metric families (every worker's)."""

    requests: _Counts
    latency: _Buckets
    backend_calls: _Counts
    backend_errors: _Counts
    backend_latency: _Buckets

    @classmethod
    def of(cls, families: Iterable[Metric], metrics: GatewayMetrics) -> MergedSeries:
        by_name = {f.name: f for f in families}
        return cls(
            requests=_counts(by_name, metrics.requests.name, metrics.requests.labels),
            latency=_buckets(
                by_name, metrics.latency.name, metrics.latency.labels, metrics.latency.bounds
            ),
            backend_calls=_counts(
                by_name, metrics.backend_calls.name, metrics.backend_calls.labels
            ),
            backend_errors=_counts(
                by_name, metrics.backend_errors.name, metrics.backend_errors.labels
            ),
            backend_latency=_buckets(
                by_name,
                metrics.backend_latency.name,
                metrics.backend_latency.labels,
                metrics.backend_latency.bounds,
            ),
        )


def _counts(by_name: Mapping[str, Metric], name: str, labels: Sequence[str]) -> _Counts:
    out = _Counts()
    family = by_name.get(name)
    for sample in family.samples if family is not None else ():
        if sample.name == f"{name}_total":
            out.values[tuple(sample.labels.get(label, "") for label in labels)] = sample.value
    return out


def _buckets(
    by_name: Mapping[str, Metric], name: str, labels: Sequence[str], bounds: Sequence[float]
) -> _Buckets:
    """Cumulative ``le`` buckets back to a count per bucket, +Inf, then the sum."""
    index = {floatToGoString(b): i for i, b in enumerate(bounds)}  # type: ignore[no-untyped-call]
    index["+Inf"] = len(bounds)
    cumulative: dict[tuple[str, ...], list[float]] = {}
    out = _Buckets(bounds)
    family = by_name.get(name)
    for sample in family.samples if family is not None else ():
        key = tuple(sample.labels.get(label, "") for label in labels)
        if sample.name == f"{name}_bucket" and sample.labels.get("le") in index:
            into = cumulative.setdefault(key, [0.0] * (len(bounds) + 1))
            into[index[sample.labels["le"]]] = sample.value
        elif sample.name == f"{name}_sum":
            out.values.setdefault(key, [0.0] * (len(bounds) + 2))[-1] = sample.value
    for key, running in cumulative.items():
        entry = out.values.setdefault(key, [0.0] * (len(bounds) + 2))
        before = 0.0
        for i, total in enumerate(running):
            entry[i] = total - before
            before = total
    return out


def take_sample(metrics: Series, at: float) -> Sample:
    """Copy the cumulative numbers now (on the event loop, where the series are updated)."""
    sample = Sample(at=at)
    for (backend, _method, _status), value in metrics.backend_calls.values.items():
        sample.backend_calls[backend] = sample.backend_calls.get(backend, 0.0) + value
    for (backend, _kind), value in metrics.backend_errors.values.items():
        sample.backend_errors[backend] = sample.backend_errors.get(backend, 0.0) + value
    width = len(metrics.backend_latency.bounds) + 2
    for (backend,), entry in metrics.backend_latency.values.items():
        _add(sample.backend_latency.setdefault(backend, [0.0] * width), entry)
    for (route, _method, status, client), value in metrics.requests.values.items():
        sample.requests[route] = sample.requests.get(route, 0.0) + value
        sample.client_requests[client] = sample.client_requests.get(client, 0.0) + value
        if status.startswith("5"):
            sample.request_errors[route] = sample.request_errors.get(route, 0.0) + value
        elif status == "429":
            sample.refusals[client] = sample.refusals.get(client, 0.0) + value
    width = len(metrics.latency.bounds) + 2
    for (route, _method), entry in metrics.latency.values.items():
        _add(sample.request_latency.setdefault(route, [0.0] * width), entry)
    return sample


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """``histogram_quantile``: ``counts`` per bucket (not cumulative), the last for +Inf.

    Linear interpolation inside the bucket; a quantile in +Inf is the highest finite bound.
    None when there were no observations.
    """
    total = sum(counts[: len(bounds) + 1])
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    for i, count in enumerate(counts[: len(bounds) + 1]):
        if running + count >= rank and count > 0:
            if i >= len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * ((rank - running) / count)
        running += count
    return bounds[-1] if bounds else None


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Rates over a window: per second, error share (0-1), latency quantiles in seconds."""

    rate: float
    error_ratio: float | None
    p50: float | None
    p99: float | None
    count: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "error_ratio": self.error_ratio,
            "p50": self.p50,
            "p99": self.p99,
            "count": self.count,
        }


EMPTY = WindowStats(0.0, None, None, None, 0.0)


def _stats(
    seconds: float,
    calls: float,
    errors: float,
    latency_new: Sequence[float] | None,
    latency_old: Sequence[float] | None,
    bounds: Sequence[float],
) -> WindowStats:
    if seconds <= 0:
        return EMPTY
    counts: list[float] = []
    if latency_new is not None:
        old = latency_old or [0.0] * len(latency_new)
        counts = [n - o for n, o in zip(latency_new, old, strict=True)][:-1]
    return WindowStats(
        rate=calls / seconds,
        error_ratio=(errors / calls) if calls > 0 else None,
        p50=quantile(0.5, bounds, counts) if counts else None,
        p99=quantile(0.99, bounds, counts) if counts else None,
        count=calls,
    )


class History:
    """The ring of samples and the windows and series read from it."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self._clock = clock
        self.samples: deque[Sample] = deque(maxlen=math.ceil(HOUR_S / interval_s) + 1)

    def sample(self) -> Sample:
        """Take and keep a sample of this worker's own series."""
        taken = take_sample(self.metrics, self._clock())
        self.samples.append(taken)
        return taken

    async def take(self) -> Sample:
        """Take and keep a sample: of every worker's series when they share ``/metrics``
        (their files are read in a worker thread), else of this worker's."""
        share = self.metrics.share
        if share is None:
            return self.sample()
        families = await asyncio.to_thread(share.merged, self.metrics.current())
        taken = take_sample(MergedSeries.of(families, self.metrics), self._clock())
        self.samples.append(taken)
        return taken

    def _pair(self, window_s: float, now: Sample) -> Sample | None:
        """The oldest kept sample no older than ``window_s`` before ``now``."""
        for old in self.samples:
            if now.at - old.at <= window_s + self.interval_s / 2 and old is not now:
                return old
        return None

    def now(self) -> Sample:
        """The current numbers as a sample (not kept): take it once per page and pass it to
        ``window`` and ``counts``, since each take walks every series. With workers sharing
        ``/metrics`` it is the last sample taken (``take``): the others' numbers are no
        fresher than that anyway."""
        if self.metrics.share is not None and self.samples:
            return self.samples[-1]
        return take_sample(self.metrics, self._clock())

    def window(
        self, kind: str, key: str, window_s: float, now: Sample | None = None
    ) -> WindowStats:
        """``kind`` backend or route; stats of ``key`` over the last ``window_s``, from the
        oldest kept sample inside the window to ``now`` (default: the current numbers)."""
        now = now or self.now()
        old = self._pair(window_s, now)
        if old is None:
            return EMPTY
        return self._between(kind, key, old, now)

    def _between(self, kind: str, key: str, old: Sample, new: Sample) -> WindowStats:
        seconds = new.at - old.at
        if kind == "backend":
            return _stats(
                seconds,
                new.backend_calls.get(key, 0.0) - old.backend_calls.get(key, 0.0),
                new.backend_errors.get(key, 0.0) - old.backend_errors.get(key, 0.0),
                new.backend_latency.get(key),
                old.backend_latency.get(key),
                self.metrics.backend_latency.bounds,
            )
        return _stats(
            seconds,
            new.requests.get(key, 0.0) - old.requests.get(key, 0.0),
            new.request_errors.get(key, 0.0) - old.request_errors.get(key, 0.0),
            new.request_latency.get(key),
            old.request_latency.get(key),
            self.metrics.latency.bounds,
        )

    def counts(self, attr: str, window_s: float, now: Sample | None = None) -> dict[str, float]:
        """Growth of a per-key total (``refusals``, ``client_requests``) over the window."""
        now = now or self.now()
        old = self._pair(window_s, now)
        new_values: Mapping[str, float] = getattr(now, attr)
        old_values: Mapping[str, float] = getattr(old, attr) if old is not None else {}
        return {k: v - old_values.get(k, 0.0) for k, v in new_values.items()}

    def series(
        self, kind: str, key: str, window_s: float, points: int = 60
    ) -> dict[str, list[Any]]:
        """Per-step points over the window for a chart: time (s), p50 and p99 (ms), errors (%).

        Steps join neighbouring samples so a window has at most ``points`` points.
        """
        kept = (
            [s for s in self.samples if self.samples[-1].at - s.at <= window_s]
            if self.samples
            else []
        )
        step = max(1, math.ceil((len(kept) - 1) / points)) if len(kept) > 1 else 1
        out: dict[str, list[Any]] = {"t": [], "p50": [], "p99": [], "err": [], "rate": []}
        for i in range(step, len(kept), step):
            stats = self._between(kind, key, kept[i - step], kept[i])
            out["t"].append(round(kept[i].at, 3))
            out["p50"].append(None if stats.p50 is None else round(stats.p50 * 1000, 3))
            out["p99"].append(None if stats.p99 is None else round(stats.p99 * 1000, 3))
            out["err"].append(
                None if stats.error_ratio is None else round(stats.error_ratio * 100, 2)
            )
            out["rate"].append(round(stats.rate, 3))
        return out
