"""Profile Trellis under load with py-spy: collapsed stacks, a flame graph, top functions.

``python -m bench.profile --variant full --seconds 15`` starts the bench backend, the sandbox
and ``trellis run`` under ``py-spy record`` (pinned like the bench), drives the system route
with wrk, and writes ``bench/results/profile-<variant>.{txt,svg}`` plus a summary of where
the samples fall (by module group, and the top functions by own and total time).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.run import (
    RESULTS,
    SYSTEM_ROUTE,
    VENV_BIN,
    Bench,
    free_port,
    parse,
    token,
    trellis_cmd,
    trellis_config,
    wait_http,
)

LAYERS: tuple[tuple[str, str], ...] = (
    # a sample belongs to the innermost layer on its stack, so each layer's share is its own
    # code plus the libraries it calls, not the layers inside it (listed outermost first)
    ("uvicorn/", "server: uvicorn HTTP + event loop"),
    ("granian", "server: granian"),
    ("gateway/policies/envelope.py", "request envelope (ids, proxies, headers, completion)"),
    ("gateway/policies/tracing.py", "tracing (otel server span)"),
    ("gateway/policies/metrics.py", "metrics (request counts, latency)"),
    ("gateway/policies/access_log.py", "access log"),
    ("starlette/middleware/errors.py", "starlette error middleware"),
    ("gateway/policies/edge.py", "edge: trusted proxy, security headers, CORS"),
    ("gateway/request_id.py", "request id"),
    ("gateway/policies/body_limit.py", "body limit"),
    ("gateway/oauth/", "oauth: bearer token, revocation, scopes"),
    ("gateway/policies/ratelimit.py", "rate limit"),
    ("gateway/policies/sliding_window.py", "rate limit"),
    ("gateway/errors.py", "error handlers + routing"),
    ("starlette/middleware/exceptions.py", "error handlers + routing"),
    ("gateway/policies/routing.py", "error handlers + routing"),
    ("starlette/routing.py", "error handlers + routing"),
    ("system_apis/http/", "system route view (render JSON)"),
    ("system_apis/inventory.py", "system API client (mapping, resilience)"),
    ("system_apis/client.py", "system API client (mapping, resilience)"),
    ("system_apis/resilience.py", "system API client (mapping, resilience)"),
    ("system_apis/backend_auth.py", "system API client (mapping, resilience)"),
    ("system_apis/observe.py", "backend attempt: client span, metrics observer"),
    ("system_apis/transport.py", "backend transport (HTTP/1.1 on asyncio + httptools)"),
)
OVERLAYS: tuple[tuple[str, str], ...] = (
    ("opentelemetry", "any OpenTelemetry code (server span, client span, propagation)"),
    ("(trace/", "any OpenTelemetry code (server span, client span, propagation)"),
    ("(context/", "any OpenTelemetry code (server span, client span, propagation)"),
    ("(propagate/", "any OpenTelemetry code (server span, client span, propagation)"),
    ("sampling.py", "any OpenTelemetry code (server span, client span, propagation)"),
    ("_semconv.py", "any OpenTelemetry code (server span, client span, propagation)"),
    ("tracecontext.py", "any OpenTelemetry code (server span, client span, propagation)"),
    ("asyncio/threads.py", "thread hand-offs (to_thread: a SQLite read while the file is busy)"),
    ("prometheus_client", "prometheus_client"),
    ("logging/", "stdlib logging (records outside the access line)"),
    ("limits/", "limits library"),
    ("pydantic", "pydantic"),
    ("orjson", "orjson"),
    ("httptools", "httptools (server and backend parsers)"),
)


def summarise(collapsed: Path, top: int = 20) -> str:
    """Each layer's own share (innermost layer on the stack), cross-cutting costs, hot lines."""
    layer: Counter[str] = Counter()
    overlay: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        samples += count
        frames = stack.split(";")
        leaf[frames[-1]] += count
        owner = "outside any request (loop, timers, other tasks)"
        for frame in frames:
            for needle, name in LAYERS:
                if needle in frame:
                    owner = name
        layer[owner] += count
        for name in {name for needle, name in OVERLAYS if needle in stack}:
            overlay[name] += count
    if not samples:
        return "no samples"
    lines = [f"{samples} samples (GIL held)", "", "own share per layer (incl. libraries it calls):"]
    lines += [f"  {100 * n / samples:5.1f}%  {g}" for g, n in layer.most_common()]
    lines += ["", "cross-cutting (a sample counts when the code is anywhere on its stack):"]
    lines += [f"  {100 * n / samples:5.1f}%  {g}" for g, n in overlay.most_common()]
    lines += ["", f"top {top} lines by own time:"]
    lines += [f"  {100 * n / samples:5.1f}%  {f[:150]}" for f, n in leaf.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variant", choices=["full", "bare"], default="full")
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if pyspy is None:
        print("py-spy not installed: pip install py-spy (it is in the bench extra)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="trellis-profile-"))
    bench = Bench(parse(["--warmup", "2", "-c", str(args.connections)]), tmp)
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"profile-{args.variant}.txt"
    svg = RESULTS / f"profile-{args.variant}.svg"
    try:
        bench.start_backend()
        bench.start_sandbox()
        config = trellis_config(
            tmp,
            args.variant,
            backend_port=bench.backend_port,
            sandbox_port=bench.sandbox_port,
            full=args.variant == "full",
        )
        port = free_port()
        cmd, env = trellis_cmd("uvicorn", config, port)
        base = f"http://127.0.0.1:{port}"
        server = bench.procs.start("trellis", cmd, bench.cores.server, env)
        wait_http(f"{base}/healthz", server, bench.procs)
        bearer = f"Authorization: Bearer {token(base, 'ops-admin', 'system:read')}"
        bench.loadgen.run(base + SYSTEM_ROUTE, duration=2, connections=64, headers=[bearer])
        for fmt, out in (("raw", raw), ("flamegraph", svg)):
            spy = subprocess.Popen(  # noqa: S603
                [
                    *(pyspy, "record", "--gil", "--pid", str(server.pid)),
                    *("--rate", str(args.rate), "--duration", str(args.seconds)),
                    *("--format", fmt, "-o", str(out)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
            load = bench.loadgen.run(
                base + SYSTEM_ROUTE,
                duration=args.seconds,
                connections=args.connections,
                headers=[bearer],
            )
            _, err = spy.communicate(timeout=args.seconds + 30)
            if spy.returncode:
                print(f"py-spy failed: {err.decode()[-400:]}")
                return 1
            print(f"{fmt}: {load.rps:,.0f} req/s while profiling -> {out}")
        summary = summarise(raw)
        (RESULTS / f"profile-{args.variant}-summary.txt").write_text(summary + "\n")
        print(summary)
    finally:
        bench.procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
