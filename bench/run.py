"""``make bench``: Trellis against its references, in one bounded run, reported as ratios.

Every scenario runs in this one invocation against the same backend (bench/backend.py), so
the ratios hold on a noisy machine even when absolute numbers drift. Load comes from wrk
when installed (else bench/loadgen.py, labelled); with ``taskset`` and two or more cores the
load generator and the backend share core 0 and the server under test gets core 1.
A scenario whose piece is missing (nginx not installed, a route not landed yet) is reported
as ``n/a: <reason>`` and the run goes on.

Output: one table on stdout, ``bench/results/latest.json`` and ``bench/results/latest.png``.
Run ``python -m bench.run --help`` for the knobs (duration, connections, scenarios).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from string import Template
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent
STOCK_PATH = "/v1/stock/SKU-0001"
SYSTEM_ROUTE = "/system/v1/inventory/stock/SKU-0001"
CUSTOMER_360 = "/process/v1/customers/{id}"
API_KEY_HEADER = "X-Api-Key: inv-sandbox-key"
HIGH_LIMIT = "1000000000/minute"
BACKENDS = ("crm", "erp", "billing", "support", "marketing", "inventory")
WRK_INSTALL = "apt-get install -y wrk   (Debian/Ubuntu; brew install wrk on macOS)"
NGINX_INSTALL = "apt-get install -y nginx-light"


class Unavailable(Exception):
    """A scenario cannot run here; the message becomes its ``n/a: <reason>``."""


def not_available(exc: Exception) -> str:
    """A row's note for a scenario that could not run (a crash names its exception)."""
    if isinstance(exc, Unavailable):
        return f"n/a: {exc}"
    return f"n/a: {type(exc).__name__}: {exc}"[:300]


# --- results -----------------------------------------------------------------------------


@dataclass
class Load:
    """One load run, as wrk.lua (or loadgen.py) summarises it; latencies in milliseconds."""

    tool: str
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    target_rps: float | None = None
    cpu_us_per_req: float | None = None
    """CPU time of the server under test (and its children) per request: robust to other
    load on the machine, unlike requests per second."""
    statuses: dict[str, int] | None = None
    """Answers by status (the Python load generator only: wrk does not tell)."""
    admitted_p99_ms: float | None = None
    """p99 of the answers other than 503 (Python load generator only)."""
    refused_p99_ms: float | None = None
    """p99 of the 503 answers (Python load generator only)."""
    loadgen_cores: float | None = None
    """Cores the load generator kept busy during the run (its CPU time / the run's time)."""
    backend_cores: float | None = None
    """Cores the bench backend kept busy during the run."""


@dataclass
class Row:
    """One line of the table."""

    key: str
    title: str
    server: str = ""
    load: Load | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.load is not None and not self.note.startswith("n/a")


@dataclass
class Contender:
    """A server started for an interleaved comparison: where to send load, and its loads."""

    url: str
    headers: list[str]
    proc: subprocess.Popen[bytes]
    trellis: bool = False
    loads: list[Load] = field(default_factory=list)
    rss: RssSampler | None = None


def median_load(loads: list[Load]) -> Load:
    """Field-by-field median of several rounds (counts summed): a row's reported figures."""
    first = loads[0]

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    cpus = [ld.cpu_us_per_req for ld in loads if ld.cpu_us_per_req is not None]
    gens = [ld.loadgen_cores for ld in loads if ld.loadgen_cores is not None]
    backends = [ld.backend_cores for ld in loads if ld.backend_cores is not None]
    return Load(
        tool=first.tool,
        connections=first.connections,
        requests=sum(ld.requests for ld in loads),
        duration_s=round(sum(ld.duration_s for ld in loads), 2),
        rps=round(statistics.median(ld.rps for ld in loads), 1),
        p50_ms=med([ld.p50_ms for ld in loads]),
        p90_ms=med([ld.p90_ms for ld in loads]),
        p99_ms=med([ld.p99_ms for ld in loads]),
        p999_ms=med([ld.p999_ms for ld in loads]),
        errors=sum(ld.errors for ld in loads),
        cpu_us_per_req=round(statistics.median(cpus), 1) if cpus else None,
        loadgen_cores=round(statistics.median(gens), 2) if gens else None,
        backend_cores=round(statistics.median(backends), 2) if backends else None,
    )


# --- machine and processes -----------------------------------------------------------------


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, Python, and the tool versions used."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": _version(["wrk", "-v"]),
        "nginx": _version(["nginx", "-v"]),
        "taskset": shutil.which("taskset") is not None,
    }


def _version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "installed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cores:
    """Which CPU the load (and backend) get, and which the server under test gets."""

    def __init__(self) -> None:
        n = self.count = os.cpu_count() or 1
        self.enabled = shutil.which("taskset") is not None and n >= 2
        self.load = 0
        self.server = 1 if self.enabled else 0
        self.all = f"0-{n - 1}"
        """Every core: for servers with several workers (they share a core with the load)."""

    def pin(self, cpu: int | str) -> list[str]:
        return ["taskset", "-c", str(cpu)] if self.enabled else []

    def move(self, pid: int, cpu: int) -> None:
        """Re-pin a running process (and its threads) to ``cpu``."""
        if not self.enabled:
            return
        subprocess.run(  # noqa: S603
            ["taskset", "-a", "-p", "-c", str(cpu), str(pid)],  # noqa: S607
            capture_output=True,
            check=False,
        )


class Procs:
    """Every process the bench starts: logged to files, stopped by pid in ``finally``."""

    def __init__(self, tmp: Path, cores: Cores) -> None:
        self.tmp = tmp
        self.cores = cores
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, cmd: list[str], cpu: int | str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 - our own commands
            self.cores.pin(cpu) + cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=self.tmp,
            start_new_session=True,
        )
        log.close()
        proc.name = name  # type: ignore[attr-defined]
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go; the exit code (None if killed)."""
        if proc in self.running:
            self.running.remove(proc)
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def stop_all(self) -> None:
        for proc in list(reversed(self.running)):
            self.stop(proc, timeout=5)

    def tail(self, name: str, lines: int = 8) -> str:
        path = self.tmp / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxies


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> tuple[int, bytes]:
    """A blocking loopback request (set-up only, never under load): status and body."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, proc: subprocess.Popen[bytes], procs: Procs, timeout: float = 30) -> None:
    """Until ``url`` answers 200; a process that dies or a timeout is ``Unavailable``."""
    deadline = time.monotonic() + timeout
    name = getattr(proc, "name", "server")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{name} exited ({proc.returncode}): {procs.tail(name, 3)}")
        with contextlib.suppress(OSError):
            if http("GET", url, timeout=1)[0] == 200:
                return
        time.sleep(0.1)
    raise Unavailable(f"{name} did not answer {url} within {timeout:.0f}s")


# --- load ----------------------------------------------------------------------------------


class LoadGenerator:
    """wrk when installed (one thread, pinned), else bench/loadgen.py, clearly labelled."""

    def __init__(self, cores: Cores, use_wrk: bool) -> None:
        self.cores = cores
        self.wrk = shutil.which("wrk") if use_wrk else None
        self.tool = "wrk" if self.wrk else "python-loadgen"

    def run(
        self,
        url: str,
        *,
        duration: float,
        connections: int,
        headers: list[str] | None = None,
        rate: float = 0.0,
        max_requests: int = 2_000_000,
        raw: bool = False,
    ) -> Load:
        """One run; ``raw``: the Python generator's plain-stream client (not with wrk)."""
        headers = headers or []
        env = dict(os.environ)
        if self.wrk:
            cmd = [self.wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"]
            cmd += ["--timeout", "5s", "-s", str(BENCH / "wrk.lua")]
            for h in headers:
                cmd += ["-H", h]
            if rate > 0:
                env["WRK_DELAY_MS"] = str(max(1, round(connections * 1000 / rate)))
            cmd.append(url)
        else:
            cmd = [PYTHON, "-m", "bench.loadgen", "--url", url, f"-c{connections}"]
            cmd += ["-d", str(duration), "--max-requests", str(max_requests)]
            cmd += ["--rate", str(rate)] + (["--raw"] if raw else [])
            for h in headers:
                cmd += ["-H", h]
        out = subprocess.run(  # noqa: S603 - our own command line
            self.cores.pin(self.cores.load) + cmd,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=duration + 60,
            check=False,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
        if line is None:
            raise Unavailable(f"{self.tool} failed: {(out.stderr or out.stdout).strip()[-300:]}")
        s = json.loads(line.removeprefix("WRKJSON "))
        secs = s["duration_us"] / 1e6
        errors = sum(
            int(s[k])
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        return Load(
            tool=self.tool + ("-raw" if raw and not self.wrk else ""),
            connections=connections,
            requests=int(s["requests"]),
            duration_s=round(secs, 2),
            rps=round(s["requests"] / secs, 1) if secs else 0.0,
            p50_ms=round(s["p50_us"] / 1000, 3),
            p90_ms=round(s["p90_us"] / 1000, 3),
            p99_ms=round(s["p99_us"] / 1000, 3),
            p999_ms=round(s["p999_us"] / 1000, 3),
            errors=errors,
            target_rps=rate or None,
            statuses=s.get("statuses"),
            admitted_p99_ms=_ms(s.get("admitted_p99_us")),
            refused_p99_ms=_ms(s.get("refused_p99_us")),
        )


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 3)


class RssSampler:
    """Peak RSS of a process and its children, sampled every 100 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_total = 0
        self.peak_worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = [_rss(p) for p in [self.pid, *_children(self.pid)]]
            self.peak_total = max(self.peak_total, sum(rss))
            self.peak_worker = max(self.peak_worker, *rss)
            self._stop.wait(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children, from /proc (0 when gone)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Remove a bench run's keys from the shared Redis."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.RedisError:
        pass
    finally:
        client.close()


def _children_cpu() -> float:
    """User + system CPU of this process's finished children (the load generator's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` from /proc (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


# --- servers -------------------------------------------------------------------------------


def asgi_server_cmd(server: str, target: str, port: int, factory: bool = True) -> list[str]:
    """uvicorn (uvloop + httptools) or granian (one worker, uvloop) serving ``target``."""
    if server == "uvicorn":
        cmd = [PYTHON, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log", "--lifespan", "on"]
        cmd += ["--loop", "uvloop", "--http", "httptools"]
        return [*cmd, "--factory"] if factory else cmd
    granian = shutil.which("granian", path=str(VENV_BIN)) or "granian"
    cmd = [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--loop", "uvloop", "--no-ws", "--log-level", "warning"]
    cmd += ["--no-access-log"]
    return [*cmd, "--factory", target] if factory else [*cmd, target]


def servers_available(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ASGI servers we can run, and why the others cannot."""
    ok, missing = [], {}
    for name in wanted:
        module = "uvicorn" if name == "uvicorn" else "granian"
        try:
            __import__(module)
            ok.append(name)
        except ImportError:
            missing[name] = f"n/a: {name} not installed (pip install -e '.[bench]')"
    return ok, missing


# --- Trellis configuration ------------------------------------------------------------------


def trellis_config(
    tmp: Path,
    name: str,
    *,
    backend_port: int,
    sandbox_port: int,
    full: bool,
    src: str | None = None,
    redis_url: str | None = None,
) -> Path:
    """A copy of config/ and its folders (of the source tree ``src``, else of
    ``--trellis-src``, else of this one: each tree with the configuration its code reads)
    pointed at the bench backend;
    ``full`` keeps every policy on.

    Both variants: inventory is the bench backend, the sandbox is started by the bench
    (pinned with the load), vendor pacing is lifted so the 360 view measures fan-out, and the
    ``internal`` tier's limit is set so high it is checked on every request but never refuses
    one (the peer's limit is set the same way). ``full=False`` switches off every policy that
    has a switch: rate limit, metrics, access log, security headers. ``redis_url``: the shared
    stores in Redis (under a prefix of this run's own) instead of the embedded ones.
    """
    out = tmp / f"config-{name}"
    out.mkdir(parents=True, exist_ok=True)
    sections: dict[str, Any] = {}
    tree = Path(src or (TRELLIS_SRC[0] if TRELLIS_SRC else REPO))
    for path in sorted((tree / "config").glob("*.yaml")):
        sections[path.stem] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for sub in sorted((tree / "config").iterdir()):  # files the sections name (fixtures/)
        if sub.is_dir():
            shutil.copytree(sub, out / sub.name, dirs_exist_ok=True)
    gw = sections.setdefault("gateway", {})
    gw["data_dir"] = str(tmp / f"data-{name}")  # each instance its own stores (run side by side)
    gw["log_level"] = "info" if full else "warning"  # the access log writes at info
    if redis_url:
        gw["redis_url"] = redis_url
        gw["redis_prefix"] = f"trellis-bench-{uuid.uuid4().hex[:8]}:"
    gw.setdefault("sandbox", {}).update({"enabled": False, "base_port": sandbox_port})
    backends = sections["backends"]
    backends["inventory"]["sandbox"] = False
    backends["inventory"]["base_url"] = f"http://127.0.0.1:{backend_port}"
    # a backend outside sandbox mode needs its credential given: the sandbox's own key
    backends["inventory"].setdefault("auth", {})["key"] = "inv-sandbox-key"
    for cfg in backends.values():
        if cfg.get("rate_limit"):
            cfg["rate_limit"] = {"rate": 100_000, "period_s": 1}
        cfg["max_concurrency"] = max(int(cfg.get("max_concurrency", 32)), 64)
    oauth = sections.setdefault("oauth", {})
    oauth["keys_dir"] = str(tmp / f"keys-{name}")
    rl = sections.setdefault("ratelimit", {})
    rl.setdefault("tiers", {}).setdefault("internal", {})["sustained"] = HIGH_LIMIT
    obs = sections.setdefault("observability", {})
    if not full:
        rl["enabled"] = False
        gw.setdefault("edge", {})["security_headers"] = False
        obs.setdefault("metrics", {})["enabled"] = False
        obs.setdefault("logs", {})["access_log"] = False
    for section, data in sections.items():
        if data:
            (out / f"{section}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out


TRELLIS_SRC: list[str] = []
"""A source tree to run instead of the installed one (``--trellis-src``, for before/after)."""


def trellis_cmd(
    server: str, config: Path, port: int, src: str | None = None, workers: int = 1
) -> tuple[list[str], dict[str, str]]:
    """``trellis run`` (uvicorn, the shipped default) or granian on ``app_from_env``; from the
    source tree ``src`` (else ``--trellis-src``, else the installed one)."""
    env = {"TRELLIS_CONFIG_DIR": str(config), "AUTHLIB_INSECURE_TRANSPORT": "1"}
    src = src or (TRELLIS_SRC[0] if TRELLIS_SRC else None)
    more = ["--workers", str(workers)] if workers > 1 else []
    if src:
        env["PYTHONPATH"] = src
        if server == "uvicorn":
            run = [PYTHON, "-m", "gateway.cli", "run", "--config", str(config), "--no-sandbox"]
            return [*run, "--port", str(port), *more], env
    if server == "uvicorn":
        trellis = shutil.which("trellis", path=str(VENV_BIN)) or "trellis"
        run = [trellis, "run", "--config", str(config), "--no-sandbox", "--port", str(port)]
        return [*run, *more], env
    return asgi_server_cmd("granian", "gateway.app:app_from_env", port), env


def token(base: str, client_id: str, scope: str) -> str:
    """A real access token from the gateway's own token endpoint (client credentials)."""
    basic = b64encode(f"{client_id}:{client_id}-secret".encode()).decode()
    body = f"grant_type=client_credentials&scope={scope}".encode()
    headers = {
        "Authorization": f"Basic {basic}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    for _ in range(20):
        status, raw = http("POST", f"{base}/oauth/token", body, headers)
        if status == 200:
            return str(json.loads(raw)["access_token"])
        if status != 429:
            raise Unavailable(f"POST /oauth/token answered {status}: {raw[:200]!r}")
        time.sleep(0.6)
    raise Unavailable("POST /oauth/token kept answering 429")


# --- the bench -----------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    warmup: float
    connections: int
    scenarios: set[str]
    servers: list[str]
    use_wrk: bool
    chart: bool
    customer_id: str | None
    events: int
    keep_tmp: bool
    repeat: int = 1
    half_peak: bool = True
    rounds: int = 3
    ab_src: str | None = None
    ab_env: dict[str, str] = field(default_factory=dict)


class Bench:
    """Runs the scenarios in order, collecting one ``Row`` each."""

    def __init__(self, opts: Options, tmp: Path) -> None:
        self.opts = opts
        self.tmp = tmp
        self.cores = Cores()
        self.procs = Procs(tmp, self.cores)
        self.loadgen = LoadGenerator(self.cores, opts.use_wrk)
        self.rows: list[Row] = []
        self.backend_port = free_port()
        self.sandbox_port = 0
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()

    # helpers

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def measure(
        self,
        url: str,
        headers: list[str] | None = None,
        pid: int | None = None,
        warmup: float | None = None,
        repeat: int | None = None,
        **kw: Any,
    ) -> Load:
        """Warm up, then ``repeat`` (default ``--repeat``) measured runs; the fastest one is
        kept (noisy machine). Interleaved scenarios pass ``repeat=1`` per round.

        With ``pid``, the server's CPU time during the kept run is recorded per request.
        """
        connections = kw.pop("connections", self.opts.connections)
        duration = kw.pop("duration", self.opts.duration)
        warmup = self.opts.warmup if warmup is None else warmup
        if warmup > 0:
            self.loadgen.run(url, duration=warmup, connections=connections, headers=headers)
        best: Load | None = None
        for _ in range(max(1, self.opts.repeat if repeat is None else repeat)):
            before = cpu_seconds(pid) if pid else 0.0
            backend_before = cpu_seconds(self.backend.pid) if pid else 0.0
            gen_before = _children_cpu()
            load = self.loadgen.run(
                url, duration=duration, connections=connections, headers=headers, **kw
            )
            if pid and load.requests:
                load.cpu_us_per_req = round((cpu_seconds(pid) - before) / load.requests * 1e6, 1)
                if load.duration_s:
                    spent = cpu_seconds(self.backend.pid) - backend_before
                    load.backend_cores = round(spent / load.duration_s, 2)
                    load.loadgen_cores = round((_children_cpu() - gen_before) / load.duration_s, 2)
            if best is None or load.rps > best.rps:
                best = load
        assert best is not None
        return best

    def scenario(self, key: str, title: str, server: str = "") -> Callable[..., Any]:
        """Decorator-like runner: records ``n/a`` for ``Unavailable`` and for crashes."""

        def run(fn: Callable[[Row], None]) -> Row:
            row = Row(key, title, server)
            if key[0] not in self.opts.scenarios:
                return row
            self.say(f"scenario {key}: {title} {server}".rstrip())
            try:
                fn(row)
            except Exception as exc:
                row.note = not_available(exc)
            self.rows.append(row)
            if row.load:
                ld = row.load
                self.say(
                    f"  -> {ld.rps:,.0f} req/s  p50 {ld.p50_ms:.2f} ms  p99 {ld.p99_ms:.2f} ms"
                    f"  errors {ld.errors}  {row.note}"
                )
            else:
                self.say(f"  -> {row.note}")
            return row

        return run

    @contextlib.contextmanager
    def serving(
        self,
        name: str,
        cmd: list[str],
        health: str,
        env: dict[str, str] | None = None,
        cpu: int | str | None = None,
    ) -> Iterator[subprocess.Popen[bytes]]:
        proc = self.procs.start(name, cmd, self.cores.server if cpu is None else cpu, env)
        try:
            wait_http(health, proc, self.procs)
            yield proc
        finally:
            self.procs.stop(proc)

    # scenarios

    def start_backend(self) -> None:
        cmd = [PYTHON, "-m", "bench.backend", "--port", str(self.backend_port)]
        self.backend = self.procs.start("backend", cmd, self.cores.load, {"PYTHONPATH": str(REPO)})
        wait_http(f"http://127.0.0.1:{self.backend_port}/__health", self.backend, self.procs)

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.backend_port}{STOCK_PATH}"

    def backend_direct(self, row: Row) -> None:
        self.cores.move(self.backend.pid, self.cores.server)
        try:
            row.load = self.measure(self.backend_url, [API_KEY_HEADER], pid=self.backend.pid)
        finally:
            self.cores.move(self.backend.pid, self.cores.load)
        row.server = "asyncio+httptools"

    def nginx(self, row: Row) -> None:
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if nginx is None:
            raise Unavailable(f"nginx not installed ({NGINX_INSTALL})")
        port = free_port()
        conf = self.tmp / "nginx.conf"
        text = Template((BENCH / "nginx.conf.tmpl").read_text()).substitute(
            PORT=port, UPSTREAM_PORT=self.backend_port, TMP=self.tmp
        )
        conf.write_text(text)
        cmd = [nginx, "-c", str(conf), "-e", str(self.tmp / "nginx-error.log")]
        with self.serving("nginx", cmd, f"http://127.0.0.1:{port}/__health") as proc:
            row.load = self.measure(f"http://127.0.0.1:{port}{STOCK_PATH}", pid=proc.pid)
        row.server = "nginx 1 worker"

    def start_python_proxy(
        self, stack: contextlib.ExitStack, target: str, server: str, headers: list[str]
    ) -> Contender:
        port = free_port()
        env = {"BENCH_UPSTREAM": f"http://127.0.0.1:{self.backend_port}", "PYTHONPATH": str(REPO)}
        cmd = asgi_server_cmd(server, target, port)
        name = target.split(":")[0].split(".")[-1] + "-" + server
        proc = stack.enter_context(
            self.serving(name, cmd, f"http://127.0.0.1:{port}/__health", env)
        )
        return Contender(f"http://127.0.0.1:{port}{STOCK_PATH}", headers, proc)

    def start_sandbox(self) -> None:
        if self.sandbox is not None and self.sandbox.poll() is None:
            return
        self.sandbox_port = free_port_block(len(BACKENDS))
        trellis = shutil.which("trellis", path=str(VENV_BIN)) or "trellis"
        cmd = [trellis, "sandbox", "--base-port", str(self.sandbox_port)]
        self.sandbox = self.procs.start("sandbox", cmd, self.cores.load)
        for i in range(len(BACKENDS)):
            wait_http(
                f"http://127.0.0.1:{self.sandbox_port + i}/__health", self.sandbox, self.procs
            )

    def start_trellis(
        self,
        stack: contextlib.ExitStack,
        server: str,
        full: bool,
        src: str | None = None,
        extra_env: dict[str, str] | None = None,
        redis: bool = False,
        workers: int = 1,
    ) -> Contender:
        """Trellis on the bench backend; ``redis``: the shared stores in Redis
        (``TRELLIS_BENCH_REDIS_URL``, default db 14 of the local Redis); ``workers`` > 1: pinned
        to every core, so the workers share cores with the load generator and the backend."""
        self.start_sandbox()
        name = f"{'full' if full else 'bare'}-{server}" + ("-ab" if src else "")
        if redis:
            name += f"-redis-{workers}w"
        redis_url = os.environ.get("TRELLIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
        config = trellis_config(
            self.tmp,
            name,
            backend_port=self.backend_port,
            sandbox_port=self.sandbox_port,
            full=full,
            src=src,
            redis_url=redis_url if redis else None,
        )
        port = free_port()
        cmd, env = trellis_cmd(server, config, port, src, workers)
        env.update(extra_env or {})
        base = f"http://127.0.0.1:{port}"
        cpu = self.cores.all if workers > 1 else None
        if redis:  # after the server has stopped (callbacks run last in, first out)
            prefix = yaml.safe_load((config / "gateway.yaml").read_text())["redis_prefix"]
            stack.callback(delete_prefixed, redis_url, prefix)
        proc = stack.enter_context(
            self.serving(f"trellis-{name}", cmd, f"{base}/healthz", env, cpu)
        )
        access = token(base, "ops-admin", "system:read")
        status, body = http(
            "GET", base + SYSTEM_ROUTE, headers={"Authorization": f"Bearer {access}"}
        )
        if status != 200:
            raise Unavailable(f"GET {SYSTEM_ROUTE} answered {status}: {body[:160]!r}")
        return Contender(base + SYSTEM_ROUTE, [f"Authorization: Bearer {access}"], proc, True)

    def interleaved(
        self, entries: list[tuple[Row, Callable[[contextlib.ExitStack], Contender]]]
    ) -> None:
        """Scenarios compared by throughput, measured in alternation rather than one after
        another: every server is started first (all pinned to the server core, idle while
        another is measured), then each round measures each once, in an order rotated from
        round to round, and a row reports the median of its rounds. A drift of the machine
        (another VM's load, a CPU-frequency change) then falls on every row alike instead of on
        whichever row ran at the time; the spread of the rounds goes into the JSON."""
        wanted = [(row, start) for row, start in entries if row.key[0] in self.opts.scenarios]
        if not wanted:
            return
        with contextlib.ExitStack() as stack:
            running: list[tuple[Row, Contender]] = []
            for row, start in wanted:
                self.say(f"scenario {row.key}: {row.title} {row.server}: starting".rstrip())
                try:
                    contender = start(stack)
                except Exception as exc:
                    row.note = not_available(exc)
                else:
                    running.append((row, contender))
                    if contender.trellis:
                        contender.rss = stack.enter_context(RssSampler(contender.proc.pid))
            rounds = max(1, self.opts.rounds)
            for n in range(rounds):
                shift = n % len(running) if running else 0
                for row, c in running[shift:] + running[:shift]:
                    warmup = self.opts.warmup if n == 0 else min(self.opts.warmup, 1.0)
                    try:
                        c.loads.append(
                            self.measure(c.url, c.headers, pid=c.proc.pid, warmup=warmup, repeat=1)
                        )
                    except Unavailable as exc:
                        row.note = not_available(exc)
                    last = c.loads[-1] if c.loads else None
                    if last is not None:
                        self.say(
                            f"  round {n + 1}/{rounds} {row.key:<3} {last.rps:>8,.0f} req/s  "
                            f"cpu {last.cpu_us_per_req or 0:,.0f} us/req  p99 {last.p99_ms:.2f} ms"
                        )
            for row, c in running:
                if c.loads:
                    row.load = median_load(c.loads)
                    if row.key.startswith("r") and row.key != "r1":  # workers share the cores
                        ld = row.load
                        row.note = (
                            f"shares {self.cores.count} cores: load generator "
                            f"{ld.loadgen_cores} cores, backend {ld.backend_cores}"
                        )
                    row.extra["rounds"] = [
                        {"rps": ld.rps, "cpu_us_per_req": ld.cpu_us_per_req, "p99_ms": ld.p99_ms}
                        for ld in c.loads
                    ]
            for row, c in running:
                if c.rss is not None:
                    c.rss.__exit__(None, None, None)
                    row.extra["rss_peak_worker_mb"] = round(c.rss.peak_worker / 2**20, 1)
                    row.extra["rss_peak_total_mb"] = round(c.rss.peak_total / 2**20, 1)
            chain = next(((r, c) for r, c in running if r.key == "6" and r.load), None)
            if chain is not None and self.opts.half_peak:
                # alone on the server core: an idle server still wakes up there (uvicorn's
                # 100 ms tick, pollers), and at half load those wake-ups are the latency tail
                for _, c in running:
                    if c is not chain[1]:
                        self.procs.stop(c.proc)
                self.half_peak(chain[0], chain[1].url, chain[1].headers[0])
        for row, _ in wanted:
            self.rows.append(row)
            if row.load:
                ld = row.load
                self.say(
                    f"  {row.key}: median {ld.rps:,.0f} req/s  cpu {ld.cpu_us_per_req or 0:,.0f}"
                    f" us/req  p50 {ld.p50_ms:.2f} ms  p99 {ld.p99_ms:.2f} ms  {row.note}"
                )

    def half_peak(self, row: Row, url: str, bearer: str) -> None:
        """p99 of the full chain and of the backend, both at half the chain's peak rate."""
        assert row.load is not None
        rate = row.load.rps / 2
        conns = max(8, min(64, round(rate / 100)))

        def quietest(target: str, header: str) -> Load:
            runs = [
                self.loadgen.run(
                    target,
                    duration=self.opts.duration,
                    connections=conns,
                    headers=[header],
                    rate=rate,
                )
                for _ in range(max(1, self.opts.repeat))
            ]
            return min(runs, key=lambda ld: ld.p99_ms)  # the run least disturbed by neighbours

        chain = quietest(url, bearer)
        self.cores.move(self.backend.pid, self.cores.server)
        try:
            direct = quietest(self.backend_url, API_KEY_HEADER)
        finally:
            self.cores.move(self.backend.pid, self.cores.load)
        row.extra["half_peak"] = {
            "target_rps": round(rate),
            "chain": asdict(chain),
            "backend": asdict(direct),
            "added_p50_ms": round(chain.p50_ms - direct.p50_ms, 3),
            "added_p99_ms": round(chain.p99_ms - direct.p99_ms, 3),
        }
        self.say(
            f"  half peak ({rate:,.0f} req/s): chain p99 {chain.p99_ms:.2f} ms, backend p99 "
            f"{direct.p99_ms:.2f} ms -> added {chain.p99_ms - direct.p99_ms:.2f} ms"
        )

    def customer_360(self, row: Row) -> None:
        self.start_sandbox()
        config = trellis_config(
            self.tmp,
            "c360",
            backend_port=self.backend_port,
            sandbox_port=self.sandbox_port,
            full=True,
        )
        port = free_port()
        cmd, env = trellis_cmd("uvicorn", config, port)
        base = f"http://127.0.0.1:{port}"
        with self.serving("trellis-360", cmd, f"{base}/healthz", env) as proc:
            tok = token(base, "orders-service", "process:read")
            auth = {"Authorization": f"Bearer {tok}"}
            customer = self.opts.customer_id or find_customer(base, auth)
            url = base + CUSTOMER_360.format(id=customer)
            status, body = http("GET", url, headers=auth, timeout=10)
            if status != 200:
                raise Unavailable(f"GET {CUSTOMER_360} answered {status}: {body[:160]!r}")
            set_backend_latency(self.sandbox_port, 0)
            conns, secs = 4, max(3.0, self.opts.duration / 2)
            base_load = self.loadgen.run(
                url, duration=secs, connections=conns, headers=[f"Authorization: Bearer {tok}"]
            )
            set_backend_latency(self.sandbox_port, 50, added=True)
            try:
                added_load = self.loadgen.run(
                    url, duration=secs, connections=conns, headers=[f"Authorization: Bearer {tok}"]
                )
                set_backend_latency(self.sandbox_port, None)
                set_backend_latency(self.sandbox_port, 50)
                row.load = self.measure(
                    url,
                    [f"Authorization: Bearer {tok}"],
                    connections=conns,
                    duration=secs,
                    pid=proc.pid,
                )
            finally:
                set_backend_latency(self.sandbox_port, None)
        row.server = "uvicorn"
        row.extra.update(
            {
                "customer_id": customer,
                "backend_latency_ms": 50,
                "target_p50_ms": 60,
                "backend_latency_mode": "response_ms",
                "p50_no_latency_ms": base_load.p50_ms,
                "p50_latency_added_ms": added_load.p50_ms,
                "added_over_slowest_ms": round(row.load.p50_ms - 50, 3),
            }
        )
        row.note = (
            f"p50 at 0 ms backends: {base_load.p50_ms:.1f} ms; with 50 ms added to each "
            f"sandbox's own work: {added_load.p50_ms:.1f} ms"
        )

    def overload(self, row: Row) -> None:
        """The full chain at 1x, 2x and 4x its peak concurrency, with the admission limit set
        to the peak's concurrency and with no limit: goodput (2xx/s), p99 of the admitted
        requests, share of 503s.

        1x is ``--connections``, the concurrency at which scenario 6 measures the chain's
        peak (the worker is CPU-bound there: more requests in flight only wait longer).
        The load is closed-loop (each connection sends its next request when the last is
        answered), so a refused request is followed at once by another: the offered rate
        grows with the share refused. The Python load generator's plain-stream client is
        used whether or not wrk is installed: wrk's latency figures do not tell a 503 from an
        admitted answer, and aiohttp's client costs more per request than the server.
        """
        base = self.opts.connections
        loadgen = LoadGenerator(self.cores, use_wrk=False)
        variants = (
            ("limit", {"TRELLIS_GATEWAY__ADMISSION__MAX_IN_FLIGHT": str(base)}),
            ("no limit", {"TRELLIS_GATEWAY__ADMISSION__ENABLED": "false"}),
        )
        levels: list[dict[str, Any]] = []
        for variant, env in variants:
            with contextlib.ExitStack() as stack:
                c = self.start_trellis(stack, "uvicorn", full=True, extra_env=env)
                if self.opts.warmup > 0:
                    loadgen.run(
                        c.url,
                        duration=self.opts.warmup,
                        connections=base,
                        headers=c.headers,
                        raw=True,
                    )
                for multiple in OVERLOAD_MULTIPLES:
                    cpu_before, started = cpu_seconds(c.proc.pid), time.monotonic()
                    load = loadgen.run(
                        c.url,
                        duration=self.opts.duration,
                        connections=base * multiple,
                        headers=c.headers,
                        raw=True,
                    )
                    level = overload_level(variant, multiple, load)
                    # the server's share of its core: near 1 when the server, not the load
                    # generator, is what limits the answers
                    level["server_cpu_share"] = round(
                        (cpu_seconds(c.proc.pid) - cpu_before) / (time.monotonic() - started), 2
                    )
                    levels.append(level)
                    self.say(
                        f"  {variant:<8} {multiple}x ({base * multiple} conns): goodput "
                        f"{level['goodput_rps']:,.0f}/s, admitted p99 "
                        f"{level['admitted_p99_ms']} ms, 503 {level['refused_share']:.0%} "
                        f"(p99 {level['refused_p99_ms']} ms), errors {load.errors - level['503']}"
                    )
                    if variant == "limit" and multiple == 1:
                        row.load = load
        row.server = "uvicorn"
        row.extra["overload"] = {"base_connections": base, "levels": levels}
        row.note = f"{loadgen.tool}-raw; limit = {base} in flight; see the overload table"

    def compression(self, row: Row) -> None:
        """Accept-Encoding gzip against identity on the backend call (bench/compression.py):
        ratios of wire bytes, client CPU and loopback wall time, small and list answers."""
        from bench.compression import measure, text

        calls = max(200, int(400 * self.opts.duration))
        result = measure(rounds=max(3, self.opts.rounds), calls=calls)
        row.server = "own transport"
        small, big = result["small"], result["list"]
        row.note = (
            f"list x{big['ratio_gzip_to_identity']['wire_bytes']} bytes, "
            f"x{big['ratio_gzip_to_identity']['cpu_us_per_call']} CPU; "
            f"small x{small['ratio_gzip_to_identity']['cpu_us_per_call']} CPU"
        )
        row.extra["compression"] = result
        self.say("\n" + text(result))

    def events(self, row: Row, store: str) -> None:
        from bench.events import EventsUnavailable, run_events

        try:
            result = run_events(store, self.opts.events, self.tmp / f"events-{store}")
        except EventsUnavailable as exc:
            raise Unavailable(str(exc)) from exc
        row.extra.update(result)
        row.server = "in-process"
        row.note = (
            f"{result['handled_per_s']:,.0f} events/s handled, "
            f"{result['published_per_s']:,.0f}/s published"
        )

    def server_check(self, server: str) -> dict[str, Any]:
        """Lifespan once each way, in-flight request drained on SIGTERM, clean exit."""
        port = free_port()
        marker = self.tmp / f"marker-{server}"
        marker.unlink(missing_ok=True)
        cmd = asgi_server_cmd(server, "bench.servercheck:app", port, factory=False)
        env = {"BENCH_MARKER": str(marker), "PYTHONPATH": str(REPO)}
        proc = self.procs.start(f"check-{server}", cmd, self.cores.server, env)
        try:
            wait_http(f"http://127.0.0.1:{port}/", proc, self.procs)
        except Unavailable as exc:
            self.procs.stop(proc)
            return {"ok": False, "why": str(exc)}
        slow: dict[str, Any] = {}

        def call() -> None:
            try:
                slow["status"] = http("GET", f"http://127.0.0.1:{port}/slow", timeout=10)[0]
            except OSError as exc:
                slow["status"] = repr(exc)

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)
        began = time.monotonic()
        rc = self.procs.stop(proc, timeout=15)
        t.join()
        events = marker.read_text().split() if marker.exists() else []
        result = {
            "in_flight_status": slow.get("status"),
            "exit_code": rc,
            "stop_s": round(time.monotonic() - began, 2),
            "lifespan": events,
        }
        result["ok"] = (
            result["in_flight_status"] == 200
            and events.count("startup") == 1
            and events.count("shutdown") == 1
            and rc is not None
        )
        return result


OVERLOAD_MULTIPLES = (1, 2, 4)


def overload_level(variant: str, multiple: int, load: Load) -> dict[str, Any]:
    """One overload run as reported: goodput, the admitted requests' p99, the 503s' share."""
    statuses = load.statuses or {}
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    refused = statuses.get("503", 0)
    answered = sum(statuses.values())
    return {
        "variant": variant,
        "multiple": multiple,
        "connections": load.connections,
        "goodput_rps": round(ok / load.duration_s, 1) if load.duration_s else 0.0,
        "offered_rps": load.rps,
        "admitted_p99_ms": load.admitted_p99_ms,
        "refused_share": round(refused / answered, 4) if answered else 0.0,
        "refused_p99_ms": load.refused_p99_ms if refused else None,
        "503": refused,
        "errors": load.errors - refused,
    }


def overload_text(rows: list[Row]) -> str | None:
    """The overload scenario's table, or None when it did not run."""
    row = next((r for r in rows if r.key == "o" and "overload" in r.extra), None)
    if row is None:
        return None
    data = row.extra["overload"]
    head = (
        f"overload (full chain, uvicorn; 1x = {data['base_connections']} connections, "
        "closed loop; limit = admission.max_in_flight at 1x):"
    )
    lines = [
        head,
        f"  {'variant':<9} {'load':>4} {'conns':>6} {'answers/s':>10} {'goodput/s':>10} "
        f"{'admitted p99 ms':>16} {'503 share':>10} {'503 p99 ms':>11} {'errors':>7} "
        f"{'server cpu':>10}",
    ]
    for lv in data["levels"]:
        refused_p99 = "-" if lv["refused_p99_ms"] is None else f"{lv['refused_p99_ms']:.2f}"
        admitted_p99 = "-" if lv["admitted_p99_ms"] is None else f"{lv['admitted_p99_ms']:.2f}"
        lines.append(
            f"  {lv['variant']:<9} {lv['multiple']:>3}x {lv['connections']:>6} "
            f"{lv['offered_rps']:>10,.0f} {lv['goodput_rps']:>10,.0f} "
            f"{admitted_p99:>16} {lv['refused_share']:>10.1%} {refused_p99:>11} "
            f"{lv['errors']:>7} {lv.get('server_cpu_share', 0):>10.0%}"
        )
    return "\n".join(lines)


def free_port_block(n: int) -> int:
    """A base port with ``n`` consecutive free ports after it."""
    for _ in range(50):
        base = free_port()
        if base + n >= 65000:
            continue
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise Unavailable(f"no {n} consecutive free ports")


def find_customer(base: str, auth: dict[str, str]) -> str:
    """A canonical customer id from the process API's own listing."""
    status, body = http("GET", f"{base}/process/v1/customers?limit=1", headers=auth, timeout=10)
    if status == 200:
        data = json.loads(body)
        items = data.get("data") or data.get("items") or []
        if items and isinstance(items[0], dict) and items[0].get("id"):
            return str(items[0]["id"])
    raise Unavailable(
        f"no customer id: GET /process/v1/customers?limit=1 answered {status} (pass --customer-id)"
    )


def set_backend_latency(base_port: int, ms: float | None, *, added: bool = False) -> None:
    """Every sandbox backend answers in ``ms`` (None: clear); ERP's own latency to 0-0.

    By default ``ms`` is each backend's response time (the sandbox fault ``response_ms``): the
    six sandboxes share one process on the load's core, so with ``added`` (``latency_ms``, kept
    for comparison) their own work queues up after the delay and the slowest
    backend answers in 50 ms plus the others' work, not in 50 ms.
    """
    for i, name in enumerate(sorted(BACKENDS)):  # the sandbox's ports follow sorted names
        url = f"http://127.0.0.1:{base_port + i}"
        if ms is None:
            http("DELETE", f"{url}/__faults")
        else:
            fault = {"latency_ms": ms} if added else {"response_ms": ms}
            http("POST", f"{url}/__faults", json.dumps(fault).encode())
        if name == "erp":
            http("POST", f"{url}/__latency", b'{"min_ms": 0, "max_ms": 0}')
        if name == "support":
            http("POST", f"{url}/__ratelimit", b'{"per_second": 1000000}')
        if name == "marketing":
            http("POST", f"{url}/__ratelimit", b'{"max": 1000000}')


# --- report --------------------------------------------------------------------------------


def _ratio(row: Row, ref: Row | None) -> str:
    if not (row.ok and ref and ref.ok and row.load and ref.load and ref.load.rps):
        return "-"
    return f"{row.load.rps / ref.load.rps:.2f}x"


def table(rows: list[Row]) -> str:
    by = {r.key: r for r in rows}
    bare, peer = by.get("3"), by.get("4")
    head = (
        f"{'#':<4} {'scenario':<50} {'server':<17} {'req/s':>8} {'vs 3':>6} {'vs 4':>6} "
        f"{'cpu us/req':>10} {'p50 ms':>8} {'p99 ms':>8} {'err':>4}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.load:
            ld = r.load
            cpu = f"{ld.cpu_us_per_req:,.0f}" if ld.cpu_us_per_req else "-"
            lines.append(
                f"{r.key:<4} {r.title:<50} {r.server:<17} {ld.rps:>8,.0f} {_ratio(r, bare):>6} "
                f"{_ratio(r, peer):>6} {cpu:>10} {ld.p50_ms:>8.2f} {ld.p99_ms:>8.2f} "
                f"{ld.errors:>4}  {r.note}"
            )
        else:
            lines.append(f"{r.key:<4} {r.title:<50} {r.server:<17} {r.note}")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    """The performance goals, each with the measured value (reported, never asserted)."""
    by = {r.key: r for r in rows}
    out: list[dict[str, Any]] = []

    def rps(key: str) -> float | None:
        r = by.get(key)
        return r.load.rps if r and r.ok and r.load else None

    def add(
        goal: str, value: float | None, limit: float, higher: bool, unit: str, why: str
    ) -> None:
        met = None if value is None else (value >= limit if higher else value <= limit)
        out.append(
            {
                "goal": goal,
                "value": value,
                "limit": limit,
                "unit": unit,
                "met": met,
                "why": why if value is None else "",
            }
        )

    def cost(key: str) -> float | None:
        r = by.get(key)
        return r.load.cpu_us_per_req if r and r.ok and r.load else None

    full, bare, peer = rps("6"), rps("3"), rps("4")
    c6, c3, c4 = cost("6"), cost("3"), cost("4")
    add(
        "full chain / bare pass-through, by CPU per request",
        round(c3 / c6, 2) if c6 and c3 else None,
        0.8,
        True,
        "x",
        "scenario 3 or 6 missing",
    )
    add(
        "full chain / peer gateway, by CPU per request",
        round(c4 / c6, 2) if c6 and c4 else None,
        1.0,
        True,
        "x",
        "scenario 4 or 6 missing",
    )
    add(
        "full chain / bare pass-through",
        round(full / bare, 2) if full and bare else None,
        0.8,
        True,
        "x",
        "scenario 3 or 6 missing",
    )
    add(
        "full chain / peer gateway",
        round(full / peer, 2) if full and peer else None,
        1.0,
        True,
        "x",
        "scenario 4 or 6 missing",
    )
    redis1, redis2 = cost("r1"), rps("r2")
    add(
        "full chain on Redis / embedded, by CPU per request (embedded cost / Redis cost)",
        round(c6 / redis1, 2) if c6 and redis1 else None,
        0.8,
        True,
        "x",
        "scenario 6 or r missing",
    )
    r1 = rps("r1")
    two = by.get("r2")
    add(
        "full chain on Redis, 2 workers / 1 worker, req/s"
        + (f" ({two.note})" if two is not None and two.note else ""),
        round(redis2 / r1, 2) if redis2 and r1 else None,
        1.7,
        True,
        "x",
        "scenario r missing",
    )
    hp = by["6"].extra.get("half_peak") if "6" in by else None
    add(
        "added p99 at half peak",
        hp["added_p99_ms"] if hp else None,
        2.0,
        False,
        "ms",
        "scenario 6 missing",
    )
    c = by.get("7")
    add(
        "360 p50 vs slowest backend (50 ms) + 10 ms",
        c.load.p50_ms if c and c.ok and c.load else None,
        60.0,
        False,
        "ms",
        (c.note if c else "scenario 7 not run"),
    )
    ev = by.get("8s")
    add(
        "events/s handled, embedded bus",
        ev.extra.get("handled_per_s") if ev else None,
        2000,
        True,
        "/s",
        (ev.note if ev else "scenario 8 not run"),
    )
    rss = [r.extra["rss_peak_worker_mb"] for r in rows if "rss_peak_worker_mb" in r.extra]
    add(
        "peak RSS per worker under load",
        max(rss) if rss else None,
        150,
        False,
        "MB",
        "no Trellis scenario ran",
    )
    return out


def targets_text(items: list[dict[str, Any]]) -> str:
    lines = ["targets (reported, never asserted):"]
    for t in items:
        if t["value"] is None:
            mark, val = "n/a ", f"n/a: {t['why']}"
        else:
            mark = "MET " if t["met"] else "MISS"
            cmp = ">=" if t["goal"].startswith(("full", "events")) else "<="
            val = f"{t['value']}{t['unit']} (goal {cmp} {t['limit']}{t['unit']})"
        lines.append(f"  [{mark}] {t['goal']:<46} {val}")
    return "\n".join(lines)


def chart(rows: list[Row], path: Path) -> str | None:
    """Throughput and p50/p99 per scenario as one PNG; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    done = [r for r in rows if r.ok and r.load and not r.key.startswith("8")]
    if not done:
        return "no scenario ran"
    labels = [f"{r.key} {r.title[:22]}\n{r.server[:18]}" for r in done]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(9, len(done) * 1.1), 9))
    xs = range(len(done))
    ax1.bar(xs, [r.load.rps for r in done if r.load], color="#4a78b5")
    ax1.set_yscale("log")
    ax1.set_ylabel("requests/s (log)")
    ax1.set_title("Throughput per scenario (same run, same backend)")
    ax1.set_xticks(list(xs), labels, fontsize=7, rotation=30, ha="right")
    width = 0.4
    ax2.bar(
        [x - width / 2 for x in xs],
        [r.load.p50_ms for r in done if r.load],
        width,
        label="p50",
        color="#6aa84f",
    )
    ax2.bar(
        [x + width / 2 for x in xs],
        [r.load.p99_ms for r in done if r.load],
        width,
        label="p99",
        color="#cc4125",
    )
    ax2.set_yscale("log")
    ax2.set_ylabel("latency ms (log)")
    ax2.set_title("Latency under full load")
    ax2.set_xticks(list(xs), labels, fontsize=7, rotation=30, ha="right")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --- entry point -----------------------------------------------------------------------------

ALL = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "o", "r", "z"]


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--duration", type=float, default=5.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument(
        "-s",
        "--scenarios",
        default=",".join(ALL),
        help="comma list of 1-9, o (overload), r (full chain on Redis, 1, 2 and N workers) "
        "and z (gzip from vendors) (default all)",
    )
    p.add_argument(
        "--servers",
        default="uvicorn,granian",
        help="ASGI servers for scenarios 3, 5 and 6 (the first is the default)",
    )
    p.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--customer-id", default=None, help="canonical id for scenario 7")
    p.add_argument("--events", type=int, default=5000, help="events per bus in scenario 8")
    p.add_argument(
        "--repeat", type=int, default=2, help="measured runs of scenarios 1, 2 and 7; best kept"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the interleaved scenarios 3-6 (median reported)",
    )
    p.add_argument(
        "--ab-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of row 6b (e.g. TRELLIS_RATELIMIT__ENABLED=false: one policy's cost)",
    )
    p.add_argument(
        "--ab-src",
        default=None,
        help="also run the full chain from this source tree, interleaved (row 6b: an A/B)",
    )
    p.add_argument(
        "--quick", action="store_true", help="2 s runs, 0.5 s warm-up, no repeat, 3 rounds"
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the logs and configs")
    p.add_argument("--no-half-peak", action="store_true", help="skip the half-peak p99 runs")
    p.add_argument("--trellis-src", default=None, help="run Trellis from this source tree")
    a = p.parse_args(argv)
    if a.trellis_src:
        TRELLIS_SRC[:] = [str(Path(a.trellis_src).resolve())]
    if a.quick:
        a.duration, a.warmup, a.repeat = 2.0, 0.5, 1
    return Options(
        duration=a.duration,
        warmup=a.warmup,
        connections=a.connections,
        scenarios=set(a.scenarios.split(",")),
        servers=[s for s in a.servers.split(",") if s],
        use_wrk=not a.no_wrk,
        chart=not a.no_chart,
        customer_id=a.customer_id,
        events=a.events,
        keep_tmp=a.keep_tmp,
        repeat=a.repeat,
        half_peak=not a.no_half_peak,
        rounds=a.rounds,
        ab_src=str(Path(a.ab_src).resolve()) if a.ab_src else (str(REPO) if a.ab_env else None),
        ab_env=dict(item.split("=", 1) for item in a.ab_env),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="trellis-bench-"))
    bench = Bench(opts, tmp)
    info = machine()
    print(
        f"Trellis bench: {info['nproc']} cores, {info['cpu']}, {info['memory_gib']} GiB, "
        f"Python {info['python']}"
    )
    if bench.loadgen.tool != "wrk":
        print(
            f"  wrk not found: using bench/loadgen.py (PYTHON LOAD GENERATOR: it saturates "
            f"far below nginx; numbers are not comparable with wrk runs). Install: {WRK_INSTALL}"
        )
    pinning = (
        f"load + backend on cpu {bench.cores.load}, server on cpu {bench.cores.server}"
        if bench.cores.enabled
        else "not pinned (needs taskset and 2+ cores)"
    )
    print(
        f"  load: {bench.loadgen.tool}, {opts.connections} connections, {opts.duration:g}s "
        f"(+{opts.warmup:g}s warm-up) per run; {pinning}; logs in {tmp}"
    )
    servers, missing = servers_available(opts.servers)
    default_server = servers[0] if servers else "uvicorn"
    checks: dict[str, Any] = {}
    try:
        bench.start_backend()
    except Unavailable as exc:
        bench.procs.stop_all()
        print(f"bench: the backend did not start: {exc}", file=sys.stderr)
        return 1
    try:
        b = bench
        b.scenario("1", "backend direct")(b.backend_direct)
        b.scenario("2", "nginx reverse proxy, upstream keepalive")(b.nginx)
        # 3-6 (and 6b) are compared by throughput: measured in alternation (Bench.interleaved)
        entries: list[tuple[Row, Callable[[contextlib.ExitStack], Contender]]] = []
        for server in opts.servers:
            key = "3" if server == default_server else "3g"
            row = Row(key, "bare Starlette+aiohttp pass-through", server)
            if server in missing:
                row.note = missing[server]
                b.rows.append(row)
                continue
            entries.append(
                (
                    row,
                    partial(
                        b.start_python_proxy,
                        target="bench.passthrough:create_app",
                        server=server,
                        headers=[],
                    ),
                )
            )
        entries.append(
            (
                Row("4", "peer gateway: premier + rate limit", "uvicorn"),
                partial(
                    b.start_python_proxy,
                    target="bench.peer_premier:create_app",
                    server="uvicorn",
                    headers=[API_KEY_HEADER],
                ),
            )
        )
        for full, num, title in (
            (False, "5", "Trellis system route, policies off"),
            (True, "6", "Trellis full chain (JWT, RL, metrics, log, trace)"),
        ):
            for server in opts.servers:
                key = num if server == default_server else num + "g"
                if server in missing:
                    b.rows.append(Row(key, title, server, note=missing[server]))
                    continue
                entries.append(
                    (
                        Row(key, title, server),
                        partial(b.start_trellis, server=server, full=full),
                    )
                )
        # the shared stores in Redis: 1 worker, 2, and one per core where there are more
        for n in sorted({1, 2, b.cores.count}):
            entries.append(
                (
                    Row(f"r{n}", f"full chain, Redis stores, {n} worker(s)", "uvicorn"),
                    partial(b.start_trellis, server="uvicorn", full=True, redis=True, workers=n),
                )
            )
        if opts.ab_src:
            what = " ".join(opts.ab_env) or f"from {Path(opts.ab_src).name}"
            entries.append(
                (
                    Row("6b", f"full chain, {what} (A/B)"[:50], default_server),
                    partial(
                        b.start_trellis,
                        server=default_server,
                        full=True,
                        src=opts.ab_src,
                        extra_env=opts.ab_env,
                    ),
                )
            )
        b.interleaved(entries)
        b.scenario("7", "customer 360, 6 backends answering in 50 ms", "uvicorn")(b.customer_360)
        b.scenario("8s", "events published->handled, SQLite")(lambda row: b.events(row, "sqlite"))
        b.scenario("8r", "events published->handled, Redis")(lambda row: b.events(row, "redis"))
        b.scenario("8p", "events published->handled, PostgreSQL")(
            lambda row: b.events(row, "postgres")
        )
        b.scenario("o", "overload: full chain at 1x, 2x, 4x peak concurrency")(b.overload)
        b.scenario("z", "gzip from vendors: cost and saving per call")(b.compression)
        if opts.scenarios & {"5", "6", "9"}:
            for server in servers:
                if server not in checks:
                    b.say(f"server check: {server} (lifespan, in-flight drain on SIGTERM)")
                    checks[server] = b.server_check(server)
                    b.say(f"  -> {checks[server]}")
    except KeyboardInterrupt:
        print("interrupted: reporting what ran", file=sys.stderr)
    finally:
        bench.procs.stop_all()
    rows = bench.rows
    rss_rows = [r for r in rows if "rss_peak_worker_mb" in r.extra]
    if "9" in opts.scenarios:
        for r in rss_rows:
            rows.append(
                Row(
                    f"9/{r.key}",
                    f"peak RSS under load (scenario {r.key})",
                    r.server,
                    note=f"{r.extra['rss_peak_worker_mb']} MB/worker, "
                    f"{r.extra['rss_peak_total_mb']} MB total",
                )
            )
    goals = targets(rows)
    report = table(rows)
    print()
    print(report)
    print()
    print(targets_text(goals))
    costs = {r.key: r.load.cpu_us_per_req for r in rows if r.ok and r.load}
    redis_cost, embedded_cost = costs.get("r1"), costs.get("6")
    if redis_cost and embedded_cost:
        print(
            f"Redis / embedded, full chain CPU per request: {redis_cost / embedded_cost:.2f}x "
            f"({redis_cost:,.0f} / {embedded_cost:,.0f} us)"
        )
    overload_report = overload_text(rows)
    if overload_report:
        print()
        print(overload_report)
    if checks:
        print(
            "servers: "
            + "; ".join(f"{k}: {'OK' if v.get('ok') else 'PROBLEM'} {v}" for k, v in checks.items())
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "options": {**asdict(opts), "scenarios": sorted(opts.scenarios)},
        "load_generator": bench.loadgen.tool,
        "pinning": pinning,
        "rows": [asdict(r) for r in rows],
        "targets": goals,
        "server_checks": checks,
        "table": report,
        "elapsed_s": round(time.monotonic() - bench.started, 1),
    }
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {RESULTS / 'latest.json'}", end="")
    if opts.chart:
        problem = chart(rows, RESULTS / "latest.png")
        print(f" and {RESULTS / 'latest.png'}" if problem is None else f" (no chart: {problem})")
    else:
        print()
    print(f"elapsed {result['elapsed_s']}s")
    if not opts.keep_tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
