"""Python bytecodes executed per full-chain request: a cost measure that does not drift.

CPU time on this shared machine moves 5-15% between runs of the same build, which hides a
change worth 2%. The number of bytecode instructions one request executes does not move at
all, so it tells whether a change to the gateway's own Python path made it shorter, and where
the remaining instructions are. It counts nothing done in C (the regex engine, orjson,
pydantic-core, the event loop, syscalls), so confirm a change with ``bench.inproc`` (CPU) and
``bench.run`` (end to end) too.

``python -m bench.opcount`` drives the full chain in-process (as ``bench.inproc`` does, against
the bench backend over real HTTP), traces ``--requests`` requests after a warm-up, and prints
the instructions and Python frames per request, and the functions that execute the most.
Run it from another source tree (``cd /tmp/old && python -m bench.opcount``) for an A/B.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from bench.inproc import _scope, call, get_token, lifespan, trellis_app
from bench.run import PYTHON, REPO, SYSTEM_ROUTE, free_port, trellis_config


async def count(backend_port: int, tmp: Path, requests: int) -> tuple[float, float, Counter[str]]:
    cfg = trellis_config(
        tmp, "opcount", backend_port=backend_port, sandbox_port=free_port(), full=True
    )
    app = await trellis_app(cfg)
    async with lifespan(app):
        token = await get_token(app)
        headers = [(b"authorization", f"Bearer {token}".encode()), (b"host", b"127.0.0.1")]
        scope = _scope("GET", SYSTEM_ROUTE, headers)
        for _ in range(300):  # warm every cache first: verified token, pool, counters
            await call(app, dict(scope))
        ops = frames = 0
        per: Counter[str] = Counter()
        root = os.getcwd() + "/"

        def tracer(frame: FrameType, event: str, arg: Any) -> Any:
            nonlocal ops, frames
            frame.f_trace_opcodes = True
            if event == "opcode":
                ops += 1
                code = frame.f_code
                where = code.co_filename.split("site-packages/")[-1].replace(root, "")
                per[f"{where}:{code.co_name}"] += 1
            elif event == "call":
                frames += 1
            return tracer

        sys.settrace(tracer)
        try:
            for _ in range(requests):
                await call(app, dict(scope))
        finally:
            sys.settrace(None)
    return ops / requests, frames / requests, per


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--top", type=int, default=30, help="functions to list")
    args = p.parse_args(argv)
    port = free_port()
    backend = subprocess.Popen(  # noqa: S603 - our own command line
        [PYTHON, "-m", "bench.backend", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        import uvloop

        with tempfile.TemporaryDirectory() as tmp:
            ops, frames, per = uvloop.run(count(port, Path(tmp), args.requests))
    finally:
        backend.terminate()
        backend.wait(10)
    print(f"{os.getcwd()}: {ops:,.0f} bytecodes and {frames:,.0f} Python frames per request")
    for name, n in per.most_common(args.top):
        print(f"{n / args.requests:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
