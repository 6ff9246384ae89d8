"""/docs for people: served offline from the bundle, CSP-clean, and rendered by a real browser."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from gateway.docs import INIT_SCRIPT, swagger_ui_dir
from tests.docs.live import GatewayThread

pytestmark = pytest.mark.slow  # a headless browser

CHROMIUM = "/usr/bin/chromium"
DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
KNOWN_PATHS = (
    "/system/v1/crm/contacts/{id}",
    "/system/v1/inventory/reservations",
    "/oauth/token",
)


def chromium() -> str:
    """Debian's chromium, or a visible skip (a failure under CI=true: its set-up installs it)."""
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} not installed: run tests/docs/ensure_chromium.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def run_chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless, loopback only: every host but 127.0.0.1 fails to resolve, so a CDN would show."""
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp / 'profile'}",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_page_loads_nothing_from_elsewhere_and_runs_no_inline_script(
    live_gateway: GatewayThread,
) -> None:
    r = requests.get(live_gateway.url + "/docs", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == DOCS_CSP
    page = r.text
    refs = re.findall(r'(?:src|href|data-spec-url)="([^"]*)"', page)
    assert refs and all(ref.startswith(("/docs/static/", "/openapi.json")) for ref in refs), refs
    assert "//" not in "".join(refs)
    # every <script> has a src and no body: the strict CSP forbids inline script
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert "style=" not in page


def test_assets_are_the_bundled_files(live_gateway: GatewayThread) -> None:
    bundle = swagger_ui_dir()
    for name, ctype in (
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("favicon-32x32.png", "image/png"),
    ):
        r = requests.get(f"{live_gateway.url}/docs/static/{name}", timeout=30)
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(ctype)
        assert r.content == (bundle / name).read_bytes()
        assert "max-age" in r.headers["cache-control"]
    init = requests.get(f"{live_gateway.url}/docs/static/{INIT_SCRIPT}", timeout=30)
    assert init.status_code == 200 and "SwaggerUIBundle(" in init.text
    assert "validatorUrl: null" in init.text  # Swagger UI would otherwise call an outside site


@pytest.mark.parametrize("name", ["index.html", "..%2F..%2Fgateway%2Fapp.py", "swagger-ui.js.map"])
def test_only_listed_assets_are_served(live_gateway: GatewayThread, name: str) -> None:
    r = requests.get(f"{live_gateway.url}/docs/static/{name}", timeout=30)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


def test_docs_render_in_chromium(live_gateway: GatewayThread, tmp_path: Path) -> None:
    """The operations are listed in the DOM the browser built (Swagger UI ran under the CSP)."""
    url = live_gateway.url + "/docs"
    dumped = run_chromium(url, tmp_path, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = html.unescape(dumped.stdout)
    assert "swagger-ui" in dom
    listed = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom))
    if not listed:
        listed = set(re.findall(r'data-path="([^"]+)"', dom))
    missing = [p for p in KNOWN_PATHS if p not in listed]
    assert not missing, f"not rendered: {missing}; stderr: {dumped.stderr[-2000:]}"
    assert len(listed) >= 40, sorted(listed)
    assert "Trellis API gateway" in dom
    assert "Failed to load API definition" not in dom

    shot = tmp_path / "docs.png"
    taken = run_chromium(url, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.stat().st_size > 10_000  # a blank page is a few hundred bytes
    keep = os.environ.get("TRELLIS_DOCS_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
