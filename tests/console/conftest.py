"""One live gateway with the console (spans recorded, fast samples) and a webhook receiver
whose answers the tests choose, both on loopback threads, for the browser tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.docs.live import GatewayThread
from tests.events.helpers import hook
from tests.gateway.helpers import test_settings

ADMIN = "test-everything"
"""A test client holding ``admin`` (its secret is ``<id>-secret``)."""
NOT_ADMIN = "test-system-writer"


class Receiver:
    """A partner's webhook endpoint: answers ``status`` to every POST and counts them."""

    def __init__(self) -> None:
        self.status = 500
        self.received = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                receiver.received += 1
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def partner() -> Iterator[Receiver]:
    rec = Receiver()
    rec.start()
    yield rec
    rec.stop()


@pytest.fixture(scope="session")
def console_gateway(
    sandbox: SandboxThread, partner: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    tmp = tmp_path_factory.mktemp("console-gw")
    settings = test_settings(
        sandbox.base_port,
        tmp,
        observability={
            "console": {
                "record_spans": True,
                "sample_interval_s": 1,
                "refresh_s": 1,
                "session_ttl_s": 120,
                "tracing_ui_url": "http://tracing.invalid/trace/{trace_id}",
            },
            "logs": {"access_log": False},
        },
        # sign-in attempts share the token endpoint's guard; a small per-client budget shows it
        oauth={
            "token_endpoint_limits": {"per_client": "20/minute", "per_address": "1000/minute"},
            "leeway_s": 0,  # so a session's expiry shows within the test
        },
        events={
            "outbound_webhooks": {
                "console-test": hook(
                    partner.url, max_attempts=2, base_delay_s=0.1, attempt_timeout_s=5
                )
            }
        },
    )
    gw = GatewayThread(create_app(settings))
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def api_token(console_gateway: GatewayThread) -> str:
    """A bearer token for API calls (of another client than the console's sign-ins)."""
    return console_gateway.token("ops-admin")
