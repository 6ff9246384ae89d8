"""Worker processes for ``trellis run``, and their bounded stop.

The parent binds the listening socket, starts each worker as ``python -m
gateway.server.worker`` with the socket passed by file descriptor, restarts a worker that dies,
and does not serve requests itself: whatever a worker is stuck in, the parent can still end it.
On SIGTERM or SIGINT it forwards SIGTERM to the workers, waits until ``shutdown_grace_s``
after the signal, kills (SIGKILL) any worker still alive and reaps them all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType

STARTUP_FAILURE = 3
"""uvicorn's exit status when the app cannot start: restarting would fail the same way."""


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket the workers share (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def wait_until(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Did ``proc`` exit before the monotonic ``deadline``? (It is reaped if so.)"""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def stop_within(procs: list[subprocess.Popen[bytes]], deadline: float) -> list[int]:
    """SIGTERM each process, SIGKILL those alive at ``deadline``; all reaped. The pids killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    killed = []
    for proc in procs:
        if not wait_until(proc, deadline):
            proc.kill()
            proc.wait()
            killed.append(proc.pid)
    return killed


class StopSignals:
    """SIGTERM and SIGINT noted, not fatal, until ``restore``: the first one's time is ``at``
    (the grace period runs from it) and ``event`` is set."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.event = threading.Event()
        self._previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.at is None:
            self.at = time.monotonic()
        self.event.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Workers:
    """Start ``count`` workers on ``sock``, keep them running, stop them within the grace."""

    def __init__(
        self,
        sock: socket.socket,
        count: int,
        *,
        grace_s: float,
        env: Mapping[str, str],
        say: Callable[[str], None],
    ) -> None:
        self.sock = sock
        self.count = count
        self.grace_s = grace_s
        self.env = dict(env)
        self.say = say
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                *(sys.executable, "-m", "gateway.server.worker"),
                *("--fd", str(fd), "--parent", str(os.getpid())),
            ],
            pass_fds=(fd,),
            env=self.env,
            # its own process group: a terminal's Ctrl+C reaches the parent only, which then
            # stops the workers once (a second signal would cut their requests in flight)
            process_group=0,
        )

    def run(self, stop: StopSignals) -> int:
        """Serve until ``stop`` is signalled (0) or a worker cannot start (1); then every
        worker is gone within the grace period from the signal."""
        status = 0
        try:
            self.procs = [self._spawn() for _ in range(self.count)]
            while not stop.event.wait(0.5):
                for i, proc in enumerate(self.procs):
                    code = proc.poll()
                    if code is None:
                        continue
                    if code == STARTUP_FAILURE:
                        self.say(f"trellis: worker {proc.pid} could not start; stopping")
                        status = 1
                        stop.event.set()
                        break
                    self.say(f"trellis: worker {proc.pid} exited with {code}; starting another")
                    self.procs[i] = self._spawn()
        finally:
            if stop.at is None:
                stop.at = time.monotonic()
            killed = stop_within(self.procs, stop.at + self.grace_s)
            for pid in killed:
                self.say(f"trellis: worker {pid} outlived the grace period: killed")
        return status


def inherit_env(**extra: str) -> dict[str, str]:
    """The parent's environment plus ``extra`` (how workers learn the configuration)."""
    env = dict(os.environ)
    env.update(extra)
    return env
