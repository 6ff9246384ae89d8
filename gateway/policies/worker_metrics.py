"""One ``/metrics`` for all the workers of a host.

With several worker processes a scrape lands on any one of them, and each counts only its
own requests, so ``rate()`` over what it shows would be wrong. Here every worker writes its
series to a file of its own in a directory they share (``{data_dir}/metrics``) every
``interval_s``, and the worker that answers a scrape sums everyone's files with its own live
numbers, the way prometheus-client's multiprocess mode does without putting a lock and a
memory-mapped write on every increment:

- counters and histograms are summed over every worker that ever wrote, the finished ones
  included, so a total never goes down when a worker exits (a drop would read as a reset);
  a finished worker's file is folded into ``retired.json`` so the files stay as many as the
  workers running;
- gauges are taken from the workers running now (their file is fresh): in-flight requests
  are summed, a breaker's state is the worst any worker sees;
- ``trellis_metrics_workers`` says how many workers the scrape summed.

Another worker's numbers are at most ``interval_s`` old. The parent (``trellis run``) empties
the directory before it starts the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from gateway.stores.private_files import FILE_MODE, private_dir

log = logging.getLogger("trellis.metrics")

RETIRED = "retired.json"
WORKERS_METRIC = "trellis_metrics_workers"
MAX_GAUGES = frozenset({"trellis_backend_breaker_state"})
"""Gauges whose workers' values are combined by their maximum (else summed)."""

Samples = dict[str, Any]
"""A file's content: ``{"families": {name: [type, documentation]}, "samples": [[family,
sample name, labels, value], ...]}``."""


def dump(families: Iterable[Metric]) -> Samples:
    """The families as a file's content."""
    kinds: dict[str, list[str]] = {}
    samples: list[list[Any]] = []
    for family in families:
        kinds[family.name] = [family.type, family.documentation]
        for sample in family.samples:
            samples.append([family.name, sample.name, sample.labels, sample.value])
    return {"families": kinds, "samples": samples}


def merge(own: Samples, running: list[Samples], retired: list[Samples]) -> list[Metric]:
    """Counters and histograms summed over all; gauges over ``own`` and ``running``."""
    kinds: dict[str, list[str]] = {}
    for part in (*retired, *running, own):
        kinds.update(part["families"])
    totals: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for part, live in [(own, True), *((p, True) for p in running), *((p, False) for p in retired)]:
        for family, name, labels, value in part["samples"]:
            if family == WORKERS_METRIC:
                continue
            is_gauge = kinds.get(family, ["gauge"])[0] == "gauge"
            if is_gauge and not live:
                continue
            key = (family, name, tuple(sorted(labels.items())))
            if key in totals and is_gauge and family in MAX_GAUGES:
                totals[key] = max(totals[key], value)
            else:
                totals[key] = totals.get(key, 0.0) + value
    metrics: dict[str, Metric] = {}
    for (family, name, labels), value in totals.items():
        metric = metrics.get(family)
        if metric is None:
            kind, documentation = kinds[family]
            metric = metrics[family] = Metric(family, documentation, kind)
        metric.add_sample(name, dict(labels), value)
    workers = GaugeMetricFamily(
        WORKERS_METRIC, "Worker processes whose series this scrape sums (running now)."
    )
    workers.add_metric([], float(1 + len(running)))
    return [*metrics.values(), workers]


class _Merged:
    """A collector over families already merged (for ``generate_latest``)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class WorkerMetricsShare:
    """This worker's file in the shared directory, and the merge of everyone's at scrape."""

    def __init__(self, directory: Path, *, interval_s: float = 1.0) -> None:
        self.directory = directory
        self.interval_s = interval_s
        # the start time tells a reused pid's file from a finished worker's
        self.own = directory / f"{os.getpid()}-{time.time_ns()}.json"
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def reset(directory: Path) -> None:
        """Empty the directory (blocking; the parent calls it before starting workers)."""
        if directory.is_dir():
            for path in directory.iterdir():
                if path.suffix == ".json":
                    path.unlink(missing_ok=True)

    async def start(self, families: Callable[[], list[Metric]]) -> None:
        """Write this worker's series every ``interval_s`` (read on the loop, written in a
        worker thread) until ``close``."""
        await asyncio.to_thread(private_dir, self.directory)
        self._task = asyncio.create_task(self._write_every(families))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _write_every(self, families: Callable[[], list[Metric]]) -> None:
        while True:
            try:
                content = dump(families())
                await asyncio.to_thread(self._write, content)
            except OSError:
                log.warning("could not write this worker's metrics", exc_info=True)
            await asyncio.sleep(self.interval_s)

    def _write(self, content: Samples) -> None:
        temporary = self.own.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(content))
        os.replace(temporary, self.own)

    def merged(self, own: list[Metric]) -> list[Metric]:
        """Every worker's series summed with ``own``: what a scrape shows (blocking: call it
        in a worker thread)."""
        running, retired = self._read_others()
        return merge(dump(own), running, retired)

    def render(self, own: list[Metric]) -> bytes:
        """The exposition of ``merged`` (blocking: call it in a worker thread)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(self.merged(own)))
        return generate_latest(registry)

    def _read_others(self) -> tuple[list[Samples], list[Samples]]:
        """(the running workers' contents, the finished ones' folded into one)."""
        stale_after = time.time() - 3 * self.interval_s
        running: list[Samples] = []
        finished: list[Path] = []
        for path in self.directory.glob("*.json"):
            if path == self.own or path.name == RETIRED:
                continue
            try:
                fresh = path.stat().st_mtime >= stale_after
                content = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # gone meanwhile, or being folded by another worker
            if fresh or _alive(path.stem):
                running.append(content)
            else:
                finished.append(path)
        return running, [self._retire(finished)] if finished else [self._retired()]

    def _retired(self) -> Samples:
        try:
            content: Samples = orjson.loads((self.directory / RETIRED).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {"families": {}, "samples": []}
        return content

    def _retire(self, finished: list[Path]) -> Samples:
        """Fold finished workers' counters into ``retired.json``, under a lock so two
        scrapes never fold one file twice."""
        lock_path = self.directory / ".lock"
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            parts = [self._retired()]
            for path in finished:
                try:
                    parts.append(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError):
                    continue  # another scrape folded it first
            merged = dump(m for m in merge(_EMPTY, [], parts) if m.name != WORKERS_METRIC)
            temporary = self.directory / (RETIRED + ".tmp")
            out_fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(out_fd, "wb") as out:
                out.write(orjson.dumps(merged))
            os.replace(temporary, self.directory / RETIRED)
            for path in finished:
                path.unlink(missing_ok=True)
            return merged
        finally:
            os.close(fd)  # releases the lock


_EMPTY: Samples = {"families": {}, "samples": []}


def _alive(stem: str) -> bool:
    """Whether the worker that wrote ``{pid}-{start}.json`` still runs."""
    try:
        os.kill(int(stem.split("-", 1)[0]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
