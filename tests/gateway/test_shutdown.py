"""`trellis run` stops within its grace period: requests in flight finish, every process it
started (workers, sandbox) is gone, whatever a worker's shutdown is stuck in."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.server.workers import stop_within
from gateway.settings import DEFAULT_CONFIG_DIR
from gateway.stopping import cancel_until_done
from system_apis.config import BACKEND_NAMES
from tests.conftest import free_port_block
from tests.gateway.test_cli_run import wait_ready
from tests.servers import free_port

pytestmark = pytest.mark.slow  # subprocesses or real timeouts: not in make test-fast

GRACE_S = 4.0
SLACK_S = 6.0
"""Beyond the grace: process start-up of the signal handling and reaping on a loaded machine."""


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie is not: it has exited and only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_within(pids: set[int], bound: float) -> set[int]:
    deadline = time.monotonic() + bound
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left


@pytest.fixture
def run_env(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> tuple[Path, int, int, dict[str, str]]:
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    base = free_port_block(len(BACKEND_NAMES))
    env = {
        "PATH": "/usr/bin:/bin",
        "TRELLIS_REDIS_URL": redis_url,
        "TRELLIS_GATEWAY__REDIS_PREFIX": redis_prefix,  # this test's keys only
        "TRELLIS_GATEWAY__SANDBOX__BASE_PORT": str(base),
        "TRELLIS_GATEWAY__DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_OAUTH__KEYS_DIR": str(tmp_path / "keys"),
        "TRELLIS_GATEWAY__SERVER__SHUTDOWN_GRACE_S": str(GRACE_S),
        "TRELLIS_GATEWAY__SERVER__SHUTDOWN_CLOSE_S": "1.5",
    }
    return cfg, free_port(), base, env


def start(cfg: Path, port: int, env: dict[str, str], workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway.cli", "run"),
            *("--config", str(cfg), "--port", str(port), "--workers", str(workers)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cfg.parent,
    )


def test_every_process_is_gone_within_the_grace_shutdown_after_shutdown(
    run_env: tuple[Path, int, int, dict[str, str]],
) -> None:
    """Two workers on Redis plus the sandbox, started and stopped with SIGTERM again and again
    (a worker's event bus could swallow the cancellation of its Redis loops and never end)."""
    cfg, port, _, env = run_env
    for cycle in range(5):
        proc = start(cfg, port, env, workers=2)
        try:
            wait_ready(proc, port, 60)
            for _ in range(10):  # traffic on both workers
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    pass
            started = descendants(proc.pid)
            assert len(started) >= 3, started  # two workers and the sandbox at least
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=GRACE_S + SLACK_S)
            took = time.monotonic() - signalled
            assert proc.returncode == 0, out.decode()[-3000:]
            assert took < GRACE_S + SLACK_S, (cycle, took)
            assert not gone_within(started, 2.0), (cycle, out.decode()[-3000:])
        finally:
            if proc.poll() is None:
                for pid in descendants(proc.pid):
                    os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait()


def test_a_request_in_flight_finishes_before_the_stop(
    run_env: tuple[Path, int, int, dict[str, str]],
) -> None:
    cfg, port, _, env = run_env
    # the inventory sandbox answers after 1.5 s: the request is in flight when SIGTERM comes
    gateway_yaml = cfg / "gateway.yaml"
    gateway_yaml.write_text(
        gateway_yaml.read_text().replace(
            "  base_port: 9101", "  base_port: 9101\n  faults:\n    inventory: {latency_ms: 1500}"
        )
    )
    proc = start(cfg, port, env, workers=1)
    try:
        wait_ready(proc, port, 60)
        import base64
        import json

        basic = base64.b64encode(b"ops-admin:ops-admin-secret").decode()
        token_request = urllib.request.Request(
            f"http://127.0.0.1:{port}/oauth/token",
            data=b"grant_type=client_credentials",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        with urllib.request.urlopen(token_request, timeout=10) as r:
            token = json.loads(r.read())["access_token"]
        result: dict[str, object] = {}

        def slow_call() -> None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/system/v1/inventory/stock/SKU-0003",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=20) as r:
                    result["status"] = r.status
            except Exception as exc:  # reported by the assertion below
                result["error"] = repr(exc)

        caller = threading.Thread(target=slow_call)
        caller.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        caller.join(20)
        assert result.get("status") == 200, result
        out, _ = proc.communicate(timeout=GRACE_S + SLACK_S)
        assert proc.returncode == 0, out.decode()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


STUCK_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.server.config import ServerLimits
    from gateway.server.serving import BoundedServer, server_config

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                    print("started", flush=True)
                else:
                    await asyncio.Event().wait()  # a shutdown that never ends

    limits = ServerLimits(shutdown_grace_s=float(sys.argv[2]), shutdown_close_s=0.5)
    config = server_config(app, limits, port=int(sys.argv[1]), lifespan="on", log_level="warning")
    def before_forced_exit():  # trellis run with one worker kills its sandbox here
        open(sys.argv[3], "w").write("called")

    BoundedServer(config, limits, before_forced_exit=before_forced_exit).run()
    """
)


def test_a_worker_stuck_in_its_shutdown_ends_itself_within_the_grace(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_WORKER)
    grace = 2.0
    proc = subprocess.Popen(
        [sys.executable, str(script), str(free_port()), str(grace), str(tmp_path / "called")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace + SLACK_S)
        assert time.monotonic() - signalled < grace + SLACK_S
        assert proc.returncode == 70  # ended by its own deadline, not by a signal
        assert (tmp_path / "called").read_text() == "called"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_process_ignoring_sigterm_is_killed_at_the_deadline() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed = stop_within([stubborn, polite], time.monotonic() + 1.0)
    assert killed == [stubborn.pid]
    assert stubborn.returncode == -signal.SIGKILL
    assert polite.returncode == -signal.SIGTERM


async def test_tasks_that_swallow_a_cancellation_are_ended_anyway() -> None:
    """What a library that catches CancelledError inside a loop does to a plain gather."""
    swallowed = 0

    async def loop_that_carries_on() -> None:
        nonlocal swallowed
        once = False
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if once:
                    raise
                once = True
                swallowed += 1  # and on it goes

    tasks = [asyncio.create_task(loop_that_carries_on()) for _ in range(3)]
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=0.3)
    assert pending  # one cancel() each was not enough
    left = await cancel_until_done(tasks, timeout_s=5.0)
    assert not left
    assert swallowed >= 3


def test_workers_stop_when_trellis_run_is_killed_outright(
    run_env: tuple[Path, int, int, dict[str, str]],
) -> None:
    """SIGKILL leaves the parent no chance to stop anything: the workers notice and stop."""
    cfg, port, _, env = run_env
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway.cli", "run", "--no-sandbox", "--workers", "2"),
            *("--config", str(cfg), "--port", str(port)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=cfg.parent,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        workers = descendants(proc.pid)
        assert len(workers) >= 2, workers
        proc.kill()
        proc.wait()
        assert not gone_within(workers, GRACE_S + SLACK_S)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_parent_died_before_it_looked_stops() -> None:
    """The parent may be killed while a worker is still importing: the worker compares its
    parent with the pid it was given, not with whatever its parent is by the time it looks."""
    orphan = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time; from gateway.server.worker import stop_when_orphaned; "
            "stop_when_orphaned(os.getppid() + 100_000, interval_s=0.05); time.sleep(30)",
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert orphan.wait(timeout=20) == -signal.SIGTERM
    finally:
        if orphan.poll() is None:
            orphan.kill()
