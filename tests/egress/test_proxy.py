"""Egress proxies against a real proxy process (tests/egress/proxy_server.py): a backend's
``proxy:``, the standard variables with NO_PROXY, credentials, CONNECT for https, and the
calls that never go through a proxy (loopback, the sandbox, `trellis run`'s own checks)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR
from system_apis.config import BACKEND_NAMES, BackendConfig
from system_apis.errors import BackendUnavailable
from system_apis.inventory import InventoryClient
from system_apis.library_transport import LibraryTransport
from system_apis.proxies import proxy_for
from system_apis.sandbox import seed
from system_apis.transport import Transport
from tests.conftest import SandboxThread, free_port_block
from tests.egress.certs import PrivateCA
from tests.egress.test_tls import server_context, tls_inventory
from tests.eventually import eventually_sync
from tests.gateway.test_cli_run import wait_ready
from tests.servers import free_port

pytestmark = pytest.mark.slow  # a proxy process per test

VENDOR = "inventory.vendor.test"
"""The vendor's name: only the proxy resolves it (to 127.0.0.1), as a corporate proxy does."""
SKU = seed.skus()[0].sku
AUTH = {"kind": "api_key", "header": "X-Api-Key", "key": "inv-sandbox-key"}
NO_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")


@dataclass
class RunningProxy:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def start_proxy(tmp_path: Path, auth: str | None = None) -> Iterator[RunningProxy]:
    port = free_port()
    log = tmp_path / f"proxy-{port}.jsonl"
    cmd = [sys.executable, "-m", "tests.egress.proxy_server", "--port", str(port)]
    cmd += ["--log", str(log), "--map", f"{VENDOR}=127.0.0.1"]
    if auth:
        cmd += ["--auth", auth]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        yield RunningProxy(port, log)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    yield from start_proxy(tmp_path)


@pytest.fixture
def authed_proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    yield from start_proxy(tmp_path, auth="egress:s3cret")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NO_PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def client(url: str, **cfg: Any) -> InventoryClient:
    config = BackendConfig.model_validate(
        {"base_url": url, "auth": AUTH, "retry": {"max_attempts": 1}, **cfg}
    )
    return InventoryClient(config, base_url=url)


async def stock(c: InventoryClient) -> int:
    await c.start()
    try:
        return (await c.get_stock(SKU)).on_hand
    finally:
        await c.close()


async def test_backend_proxy_forwards_http(sandbox: SandboxThread, proxy: RunningProxy) -> None:
    port = int(sandbox.url("inventory").rsplit(":", 1)[1])
    url = f"http://{VENDOR}:{port}"
    c = client(url, proxy=proxy.url)
    assert isinstance(c._make_transport(("http", VENDOR, port)), LibraryTransport)
    assert await stock(c) >= 0
    assert [(s["method"], s["target"]) for s in proxy.seen()] == [("GET", f"{url}/v1/stock/{SKU}")]


async def test_https_goes_through_connect_with_credentials(
    tmp_path: Path, authed_proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY with credentials: a CONNECT carrying Proxy-Authorization, and TLS end to
    end (the vendor's certificate checked against the backend's CA, not the proxy's)."""
    ca = PrivateCA(tmp_path)
    leaf = ca.issue(VENDOR, dns=(VENDOR,))
    async with tls_inventory(server_context(leaf)) as port:
        monkeypatch.setenv("HTTPS_PROXY", f"http://egress:s3cret@127.0.0.1:{authed_proxy.port}")
        c = client(f"https://{VENDOR}:{port}", tls={"ca_bundle": str(ca.pem)})
        assert await stock(c) >= 0
        expected = "Basic " + base64.b64encode(b"egress:s3cret").decode()
        assert [(s["method"], s["target"], s["authorization"]) for s in authed_proxy.seen()] == [
            ("CONNECT", f"{VENDOR}:{port}", expected)
        ]


async def test_wrong_proxy_credentials_fail_the_call(
    tmp_path: Path, authed_proxy: RunningProxy
) -> None:
    ca = PrivateCA(tmp_path)
    leaf = ca.issue(VENDOR, dns=(VENDOR,))
    async with tls_inventory(server_context(leaf)) as port:
        wrong = f"http://egress:guess@127.0.0.1:{authed_proxy.port}"
        c = client(f"https://{VENDOR}:{port}", tls={"ca_bundle": str(ca.pem)}, proxy=wrong)
        with pytest.raises(BackendUnavailable) as err:
            await stock(c)
        assert err.value.detail == "connection failed: ConnectFailed"
        assert [s["method"] for s in authed_proxy.seen()] == ["CONNECT"]


async def test_loopback_and_the_sandbox_never_use_a_proxy(
    sandbox: SandboxThread, proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    direct = client(sandbox.url("inventory"))  # 127.0.0.1, no NO_PROXY
    assert isinstance(direct._make_transport(("http", "127.0.0.1", 1)), Transport)
    assert await stock(direct) >= 0
    cfg = BackendConfig.model_validate({"sandbox": True, "auth": AUTH, "proxy": proxy.url})
    sandboxed = InventoryClient(cfg, base_url=sandbox.url("inventory"))
    assert await stock(sandboxed) >= 0
    assert proxy.seen() == []


def test_environment_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib's reading of the variables: by scheme, NO_PROXY by domain suffix, lower case."""
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("http_proxy", "http://u:p%40ss@proxy.corp:8080")
    monkeypatch.setenv("NO_PROXY", "internal.example,.lan")
    https = proxy_for("https", "api.vendor.com", None)
    assert https is not None and https.url == "http://proxy.corp:3128"
    assert https.source == "HTTPS_PROXY" and https.authorization is None
    http = proxy_for("http", "api.vendor.com", None)
    assert http is not None and http.url == "http://proxy.corp:8080"
    assert http.authorization == "Basic " + base64.b64encode(b"u:p@ss").decode()
    assert "p@ss" not in repr(http)
    assert proxy_for("https", "erp.internal.example", None) is None
    assert proxy_for("https", "wms.lan", None) is None
    assert proxy_for("https", "localhost", None) is None
    assert proxy_for("https", "::1", None) is None
    assert proxy_for("https", "api.vendor.com", "direct") is None
    own = proxy_for("https", "erp.internal.example", "http://egress.corp:3128")
    assert own is not None and own.source == "backends.yaml"  # configured beats NO_PROXY


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("https://proxy:3128", "starts with http://"),
        ("http://proxy", "needs a host and a port"),
        ("http://proxy:3128/path", "no path"),
    ],
)
def test_proxy_config_errors_are_clear(proxy: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackendConfig.model_validate({"base_url": "https://erp.example", "proxy": proxy})
    own = {"base_url": "https://erp.example", "proxy": "http://p:1", "transport": "own"}
    with pytest.raises(ValueError, match="transport: own has no proxy support"):
        BackendConfig.model_validate(own)


def test_trellis_run_with_http_proxy_and_no_no_proxy(tmp_path: Path) -> None:
    """A proxy variable for the whole host (and a dead proxy): the sandbox readiness check and
    the backend calls to the sandbox stay direct, so the gateway starts and is ready."""
    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    port, base = free_port(), free_port_block(len(BACKEND_NAMES))
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HTTP_PROXY": dead_proxy,
        "HTTPS_PROXY": dead_proxy,
        "TRELLIS_GATEWAY__SANDBOX__BASE_PORT": str(base),
        "TRELLIS_GATEWAY__DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_OAUTH__KEYS_DIR": str(tmp_path / "keys"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_ready(proc, port, 40)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    eventually_sync(lambda: proc.poll() is not None)


def test_an_environment_proxy_overrides_transport_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The own transport cannot tunnel: a proxy from the environment still applies, through
    the library transport, and the start log says so."""
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.corp.example:3128")
    c = client("https://wms.vendor.example", transport="own")
    with caplog.at_level("WARNING", logger="trellis.system"):
        t = c._make_transport(("https", "wms.vendor.example", 443))
    assert isinstance(t, LibraryTransport) and t.proxy is not None
    assert t.proxy.source == "HTTPS_PROXY"
    assert any("no proxy support" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("NO_PROXY", "vendor.example")
    assert isinstance(c._make_transport(("https", "wms.vendor.example", 443)), Transport)


def test_proxy_credentials_are_masked_in_the_console_and_errors(tmp_path: Path) -> None:
    from gateway.console.settings_view import config_rows
    from gateway.settings import inspect_config

    backends = {"erp": {"proxy": "http://trellis:hunter2@egress.corp.example:3128"}}
    report = inspect_config(DEFAULT_CONFIG_DIR, backends=backends)
    assert report.settings is not None
    rows = {row.key: row.value for row in config_rows(report.settings, DEFAULT_CONFIG_DIR)}
    assert rows["backends.erp.proxy"] == "http://[REDACTED]@egress.corp.example:3128"
    bad = inspect_config(DEFAULT_CONFIG_DIR, backends={"erp": {"proxy": "https://u:hunter2@p:1"}})
    assert bad.settings is None and "hunter2" not in " ".join(bad.problems)


async def test_the_oauth_token_fetch_goes_through_the_backend_proxy(
    sandbox: SandboxThread, proxy: RunningProxy
) -> None:
    """Every call of a proxied backend takes the proxy, its OAuth token request included."""
    from system_apis.crm import CrmClient

    port = int(sandbox.url("crm").rsplit(":", 1)[1])
    url = f"http://{VENDOR}:{port}"
    cfg = BackendConfig.model_validate(
        {
            "base_url": url,
            "proxy": proxy.url,
            "auth": {
                "kind": "oauth_client_credentials",
                "token_url": "/services/oauth2/token",
                "client_id": "trellis-sandbox",
                "client_secret": "crm-sandbox-secret",
            },
        }
    )
    c = CrmClient(cfg, url)
    await c.start()
    try:
        person = seed.people()[0]
        assert (await c.get_contact(person.crm_contact_id)).id == person.crm_contact_id
    finally:
        await c.close()
    seen = [(s["method"], s["target"].split("?")[0]) for s in proxy.seen()]
    assert seen[0] == ("POST", f"{url}/services/oauth2/token")
    assert seen[1][0] == "GET" and seen[1][1].startswith(f"{url}/services/data/")
