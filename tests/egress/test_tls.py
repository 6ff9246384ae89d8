"""Per-backend TLS against a real TLS server: the inventory sandbox served over HTTPS with
certificates from a private CA made by the test, through both transports."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.app import create_app
from gateway.settings import DEFAULT_CONFIG_DIR, inspect_config
from system_apis.config import BackendConfig
from system_apis.errors import BackendUnavailable
from system_apis.inventory import InventoryClient
from system_apis.sandbox import seed
from system_apis.sandbox.server import make_backend_app
from tests.egress.certs import Issued, PrivateCA
from tests.gateway.helpers import test_settings, token
from tests.servers import free_port, serve

SKU = seed.skus()[0].sku


@pytest.fixture(params=["own", "library"])
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA(tmp_path)


def server_context(
    leaf: Issued, *, client_ca: Path | None = None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(leaf.cert, leaf.key)
    if client_ca is not None:  # mutual TLS: no client certificate, no handshake
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


@asynccontextmanager
async def tls_inventory(ctx: ssl.SSLContext) -> AsyncIterator[int]:
    """The inventory sandbox on https://127.0.0.1:<port>."""
    runner = web.AppRunner(make_backend_app("inventory"), access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def inventory(port: int, impl: str, host: str = "127.0.0.1", **cfg: Any) -> InventoryClient:
    config = BackendConfig.model_validate(
        {
            "base_url": f"https://{host}:{port}",
            "transport": impl,
            "auth": {"kind": "api_key", "header": "X-Api-Key", "key": "inv-sandbox-key"},
            "retry": {"max_attempts": 1},
            "timeouts": {"connect_s": 2, "read_s": 2, "total_s": 3},
            **cfg,
        }
    )
    return InventoryClient(config, base_url=f"https://{host}:{port}")


async def stock_or_error(client: InventoryClient) -> str:
    """``ok``, or the error detail of the call."""
    await client.start()
    try:
        await client.get_stock(SKU)
        return "ok"
    except BackendUnavailable as exc:
        return exc.detail
    finally:
        await client.close()


async def test_a_private_ca_is_trusted_only_where_configured(ca: PrivateCA, impl: str) -> None:
    leaf = ca.issue("inventory.test", ips=("127.0.0.1",))
    async with tls_inventory(server_context(leaf)) as port:
        assert await stock_or_error(inventory(port, impl, tls={"ca_bundle": str(ca.pem)})) == "ok"
        refused = await stock_or_error(inventory(port, impl))  # the system store: unknown CA
        assert refused == "connection failed: ConnectFailed"


async def test_server_name_is_the_name_checked(ca: PrivateCA, impl: str) -> None:
    """Reached by IP, the certificate names only the service: ``server_name`` is checked."""
    leaf = ca.issue("inventory.internal", dns=("inventory.internal",))
    async with tls_inventory(server_context(leaf)) as port:
        tls = {"ca_bundle": str(ca.pem), "server_name": "inventory.internal"}
        assert await stock_or_error(inventory(port, impl, tls=tls)) == "ok"
        wrong = {"ca_bundle": str(ca.pem)}  # 127.0.0.1 is not in the certificate
        assert await stock_or_error(inventory(port, impl, tls=wrong)) != "ok"


async def test_mutual_tls_sends_the_client_certificate(ca: PrivateCA, impl: str) -> None:
    leaf = ca.issue("inventory.test", ips=("127.0.0.1",))
    partner_ca = PrivateCA(ca.directory, "Partner CA")  # who may call the vendor
    us = partner_ca.issue("trellis-client", client=True)
    stranger = ca.issue("stranger", client=True)  # a valid certificate, but not from partner_ca
    async with tls_inventory(server_context(leaf, client_ca=partner_ca.pem)) as port:
        mtls = {"ca_bundle": str(ca.pem), "client_cert": str(us.cert), "client_key": str(us.key)}
        assert await stock_or_error(inventory(port, impl, tls=mtls)) == "ok"
        none = {"ca_bundle": str(ca.pem)}
        assert await stock_or_error(inventory(port, impl, tls=none)) != "ok"
        other = {**mtls, "client_cert": str(stranger.cert), "client_key": str(stranger.key)}
        assert await stock_or_error(inventory(port, impl, tls=other)) != "ok"


async def test_min_version_refuses_an_older_server(ca: PrivateCA, impl: str) -> None:
    leaf = ca.issue("inventory.test", ips=("127.0.0.1",))
    old = server_context(leaf, max_version=ssl.TLSVersion.TLSv1_2)
    async with tls_inventory(old) as port:
        tls12 = {"ca_bundle": str(ca.pem)}
        assert await stock_or_error(inventory(port, impl, tls=tls12)) == "ok"
        tls13 = {"ca_bundle": str(ca.pem), "min_version": "1.3"}
        assert await stock_or_error(inventory(port, impl, tls=tls13)) != "ok"


async def test_verify_off_connects_and_warns_loudly(
    ca: PrivateCA, impl: str, caplog: pytest.LogCaptureFixture
) -> None:
    leaf = ca.issue("inventory.test", ips=("127.0.0.1",))
    async with tls_inventory(server_context(leaf)) as port:
        with caplog.at_level(logging.WARNING, logger="trellis.system"):
            assert await stock_or_error(inventory(port, impl, tls={"verify": False})) == "ok"
        assert any("verification is off" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"ca_bundle": "/no/such/ca.pem"}, "ca_bundle"),
        ({"client_key": "{key}"}, "client_key needs client_cert"),
        ({"verify": False, "ca_bundle": "{ca}"}, "verify: false ignores"),
        ({"ca_bundle": "{key}"}, "cannot load the TLS files"),
        ({"client_cert": "{cert}", "client_key": "{other_key}"}, "cannot load the TLS files"),
        ({"min_version": "1.1"}, "min_version"),
        ({"verfy": False}, "verfy"),
    ],
    ids=[
        "missing-ca",
        "key-alone",
        "verify-off-with-ca",
        "ca-not-pem",
        "key-mismatch",
        "old-version",
        "typo",
    ],
)
def test_tls_config_errors_are_clear(ca: PrivateCA, tls: dict[str, Any], message: str) -> None:
    a = ca.issue("a", client=True)
    b = ca.issue("b", client=True)
    paths = {"ca": str(ca.pem), "cert": str(a.cert), "key": str(a.key), "other_key": str(b.key)}
    filled = {k: v.format(**paths) if isinstance(v, str) else v for k, v in tls.items()}
    with pytest.raises(ValidationError) as err:
        BackendConfig.model_validate({"base_url": "https://erp.example", "tls": filled})
    assert message in str(err.value)


async def test_verify_off_is_a_warning_in_readyz_and_at_start(
    ca: PrivateCA, sandbox: Any, tmp_path: Path
) -> None:
    leaf = ca.issue("inventory.test", ips=("127.0.0.1",))
    async with tls_inventory(server_context(leaf)) as port:
        backends = {
            "inventory": {
                "sandbox": False,
                "base_url": f"https://127.0.0.1:{port}",
                "auth": {"kind": "api_key", "header": "X-Api-Key", "key": "inv-sandbox-key"},
                "tls": {"verify": False},
            }
        }
        report = inspect_config(DEFAULT_CONFIG_DIR, backends=backends)
        assert report.settings is not None
        assert any("backends.inventory.tls.verify is false" in w for w in report.warnings)
        settings = test_settings(sandbox.base_port, tmp_path, backends=backends)
        async with serve(create_app(settings)) as url:
            bearer = await token(url, "test-everything")
            async with (
                aiohttp.ClientSession() as s,
                s.get(url + "/readyz", headers={"Authorization": f"Bearer {bearer}"}) as r,
            ):
                body = await r.json()
            assert body["backends"]["inventory"]["reachable"] is True
            assert body["warnings"] == [
                "inventory: TLS certificate verification is off (tls.verify: false)"
            ]


@pytest.mark.slow  # a `trellis check-config` process
def test_check_config_names_a_missing_ca_file(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config)
    backends = config / "backends.yaml"
    backends.write_text(
        backends.read_text().replace(
            "inventory:\n  sandbox: true\n",
            "inventory:\n  sandbox: false\n  base_url: https://wms.example\n"
            "  tls:\n    ca_bundle: /etc/trellis/no-such-ca.pem\n",
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout
    assert "backends.yaml" in done.stderr and "inventory.tls.ca_bundle" in done.stderr
    assert "does not point to a file" in done.stderr
