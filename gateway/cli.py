"""The ``trellis`` command: run the gateway (with its sandbox), run the sandbox, check config."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from .events.cli import add_dlq_commands
from .settings import DEFAULT_CONFIG_DIR, Settings, default_config_dir, inspect_config

if TYPE_CHECKING:
    from .server.workers import StopSignals


def _load_or_exit(config_dir: str | None, **overrides: object) -> Settings:
    """The settings; warnings and every problem printed, exit status 2 when invalid."""
    report = inspect_config(config_dir, **overrides)
    for warning in report.warnings:
        print(f"trellis: warning: {warning}", file=sys.stderr)
    if report.settings is None:
        print(
            f"trellis: invalid configuration ({len(report.problems)} problem(s)):", file=sys.stderr
        )
        for problem in report.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2)
    return report.settings


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load_or_exit(args.config)
    stores = "Redis" if settings.shared_stores else "embedded"
    if settings.gateway.database_url:
        stores = f"PostgreSQL (durable records), {stores} (rate limits)"
    print(
        f"configuration OK: {len(settings.backends)} backends, {len(settings.clients)} clients, "
        f"stores {stores}"
    )
    serving = settings.role_instances()
    print(
        "roles: "
        + ", ".join(
            f"{role}={name} ({settings.backends[name].connector})"
            for role, name in sorted(serving.items())
        )
    )
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from system_apis.sandbox.server import serve_forever

    # the instances with sandbox: true (of the shipped configuration without --config), and
    # faults from gateway.sandbox.faults
    config = args.config or str(DEFAULT_CONFIG_DIR)
    settings = _load_or_exit(config, gateway={"sandbox": {"base_port": args.base_port}})
    faults = settings.gateway.sandbox.faults
    for name, f in faults.items():
        print(f"sandbox {name:<10} faults {f.model_dump(exclude_defaults=True)}", flush=True)
    served = {n: c for n, c in settings.backends.items() if c.sandbox}
    instances = {n: c.connector or n for n, c in served.items()}
    ports = settings.sandbox_ports()
    try:
        asyncio.run(
            serve_forever(
                args.host,
                args.base_port,
                announce=_say,
                faults=faults,
                instances=instances,
                fixed_ports=ports,
                configs=served,
            )
        )
    except OSError as exc:
        print(f"trellis sandbox: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""urllib without the proxy variables: the sandbox is ours, on this host, never behind a proxy
(with HTTP_PROXY set and no NO_PROXY, urllib would send even a loopback URL to the proxy)."""


def _start_sandbox(settings: Settings, config_dir: str | None) -> subprocess.Popen[bytes]:
    sb = settings.gateway.sandbox
    cmd = [
        sys.executable,
        "-m",
        "gateway.cli",
        "sandbox",
        "--host",
        sb.host,
        "--base-port",
        str(sb.base_port),
        "--config",
        str(config_dir or default_config_dir()),
    ]
    # its own process group: a terminal's Ctrl+C reaches `trellis run` only, which stops the
    # sandbox after the workers (their requests in flight may still need it)
    proc = subprocess.Popen(cmd, process_group=0)  # noqa: S603 - our own interpreter and module
    deadline = time.monotonic() + 20
    pending = [n for n, cfg in sorted(settings.backends.items()) if cfg.sandbox]
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"trellis: the sandbox exited with status {proc.returncode}")
        try:
            url = settings.sandbox_url(pending[0]) + "/__health"
            with _DIRECT.open(url, timeout=0.5):
                pending.pop(0)
        except OSError:
            time.sleep(0.1)
    if pending:
        proc.terminate()
        raise SystemExit(f"trellis: sandbox backends {pending} did not start within 20 s")
    return proc


def cmd_run(args: argparse.Namespace) -> int:
    from .server.workers import StopSignals, Workers, bind, inherit_env, stop_within

    gateway: dict[str, object] = {}
    if args.host:
        gateway["host"] = args.host
    if args.port:
        gateway["port"] = args.port
    if args.workers:
        gateway["workers"] = args.workers
    settings = _load_or_exit(args.config, gateway=gateway)
    gw = settings.gateway
    if gw.workers > 1 and not settings.shared_stores:
        print(
            f"trellis: refusing to start {gw.workers} workers with embedded stores: rate limits, "
            "revocations, idempotency keys and events would not be shared between them. "
            "Set TRELLIS_REDIS_URL (or gateway.redis_url) or run one worker.",
            file=sys.stderr,
        )
        return 2
    from .stores.preflight import PreflightError, preflight

    try:
        preflight(settings)
    except PreflightError as exc:
        print(f"trellis: cannot start: {exc}", file=sys.stderr)
        return 1
    config_dir = Path(args.config or default_config_dir()).resolve()
    os.environ["TRELLIS_CONFIG_DIR"] = str(config_dir)
    grace = gw.server.shutdown_grace_s
    stop = StopSignals()  # from here a stop signal is noted; the sandbox is stopped in order
    sandbox: subprocess.Popen[bytes] | None = None
    status = 0
    try:
        if settings.uses_sandbox and gw.sandbox.enabled and not args.no_sandbox:
            sandbox = _start_sandbox(settings, args.config)
        print(f"gateway    http://{gw.host}:{gw.port}  (workers: {gw.workers})", flush=True)
        if stop.at is not None:  # stopped while the sandbox started
            pass
        elif gw.workers == 1:
            status = _serve_here(settings, stop, sandbox)
        else:
            try:
                sock = bind(gw.host, gw.port)
            except OSError as exc:
                print(f"trellis: cannot listen on {gw.host}:{gw.port}: {exc}", file=sys.stderr)
                return 1
            from .app import metrics_dir
            from .policies.worker_metrics import WorkerMetricsShare

            WorkerMetricsShare.reset(metrics_dir(settings))  # this run's workers' series only
            # the workers read the configuration as this process did: same files, overrides
            env = inherit_env(
                TRELLIS_GATEWAY__HOST=gw.host,
                TRELLIS_GATEWAY__PORT=str(gw.port),
                TRELLIS_GATEWAY__WORKERS=str(gw.workers),
            )
            try:
                status = Workers(sock, gw.workers, grace_s=grace, env=env, say=_say).run(stop)
            finally:
                sock.close()
    finally:
        if sandbox is not None:  # after the workers: their requests in flight may need it
            deadline = max((stop.at or time.monotonic()) + grace, time.monotonic() + 0.5)
            stop_within([sandbox], deadline)
        stop.restore()
    print("trellis: stopped", flush=True)
    return status


def _serve_here(
    settings: Settings, stop: StopSignals, sandbox: subprocess.Popen[bytes] | None
) -> int:
    """One worker: the app is served in this process (no second interpreter's memory)."""
    from .app import create_app
    from .server.serving import BoundedServer, server_config

    gw = settings.gateway
    config = server_config(
        create_app(settings),
        gw.server,
        host=gw.host,
        port=gw.port,
        proxy_headers=False,  # gateway.edge.trusted_proxies decides, not uvicorn
        log_level=gw.log_level,
        access_log=False,
        server_header=False,  # no "server: uvicorn": nothing to fingerprint by
        lifespan="on",
    )
    # past the grace, the process ends itself: the sandbox must not outlive it
    server = BoundedServer(config, gw.server, before_forced_exit=sandbox.kill if sandbox else None)
    server.run()  # its own signal handlers meanwhile; the signal is re-raised to ``stop``
    if server.stop_signal_at is not None:
        stop.at = server.stop_signal_at
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trellis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the sandbox backends (if configured) and the gateway")
    run.add_argument("--host", default=None)
    run.add_argument("--port", type=int, default=None)
    run.add_argument("--workers", type=int, default=None)
    run.add_argument("--config", default=None, help="config directory (default: ./config)")
    run.add_argument("--no-sandbox", action="store_true", help="do not start the sandbox")
    run.set_defaults(func=cmd_run)

    sandbox = sub.add_parser("sandbox", help="run only the sandbox backends")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--base-port", type=int, default=9101)
    sandbox.add_argument(
        "--config",
        default=None,
        help="serve the instances with sandbox: true (default: those of the shipped "
        "configuration), inject gateway.sandbox.faults",
    )
    sandbox.set_defaults(func=cmd_sandbox)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    check.add_argument("--config", default=None)
    check.set_defaults(func=cmd_check_config)

    add_dlq_commands(sub)  # trellis dlq list|show|replay|discard
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
