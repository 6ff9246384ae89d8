"""The console in a real browser (Debian's chromium driven by Playwright): sign in, see the
backends, watch a breaker open, replay a dead letter, find a trace, sign out."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from gateway.app import Gateway
from system_apis.config import BACKEND_NAMES
from system_apis.resilience import BreakerState
from tests.conftest import SandboxThread
from tests.console.conftest import ADMIN, Receiver
from tests.console.helpers import wait_dead_letter
from tests.docs.live import GatewayThread
from tests.docs.test_docs_page import chromium
from tests.events.helpers import event, write_outbox

SHOTS_ENV = "TRELLIS_CONSOLE_SCREENSHOTS"
"""A directory to copy the screenshots to as well (docs/img when refreshing the docs)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=executable,
            headless=True,
            # loopback only: any other host fails to resolve, so a CDN reference would show
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        yield launched
        launched.close()


class Watched:
    """A page plus what it did that it must not: CSP violations, requests elsewhere."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.problems: list[str] = []

        def on_console(msg: ConsoleMessage) -> None:
            # HTTP errors the test causes (a wrong sign-in's 401) are checked where they happen
            if "Content Security Policy" in msg.text or (
                msg.type == "error" and "Failed to load resource" not in msg.text
            ):
                self.problems.append(f"console {msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on(
            "request",
            lambda req: (
                None
                if req.url.startswith(origin)
                else self.problems.append(f"request elsewhere: {req.url}")
            ),
        )


def shoot(page: Page, tmp_path: Path, name: str, *, full_page: bool = True) -> Path:
    shot = tmp_path / f"console-{name}.png"
    page.screenshot(path=str(shot), full_page=full_page)
    assert shot.stat().st_size > 10_000  # a blank page is a few hundred bytes
    keep = os.environ.get(SHOTS_ENV)
    if keep:
        shutil.copyfile(shot, Path(keep) / shot.name)
    return shot


def close_breaker(app: Gateway, url: str, token: str, backend: str) -> None:
    """Wait for the breaker to half-open, then call through it until it closes."""
    deadline = time.monotonic() + 60
    client = app.systems.all()[backend]
    while client.breaker.state is not BreakerState.CLOSED:
        assert time.monotonic() < deadline, "the breaker did not close"
        if client.breaker.state is BreakerState.HALF_OPEN:
            requests.get(
                f"{url}/system/v1/{backend}/customers",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        time.sleep(0.2)


def set_faults(sandbox: SandboxThread, backend: str, faults: dict[str, float] | None) -> None:
    """The sandbox's fault control, over plain HTTP (Playwright's sync API owns this thread's
    event loop)."""
    method = "POST" if faults else "DELETE"
    r = requests.request(method, sandbox.url(backend) + "/__faults", json=faults, timeout=30)
    assert r.status_code == 200, r.text


def sign_in(page: Page, url: str, secret: str) -> None:
    page.goto(url + "/console")
    expect(page).to_have_url(url + "/console/login")
    page.fill("#client_id", ADMIN)
    page.fill("#client_secret", secret)
    page.click("#sign-in")


def open_breaker(app: Gateway, url: str, token: str, backend: str) -> None:
    """Call the backend through the gateway until its breaker opens (the sandbox fails)."""
    deadline = time.monotonic() + 60
    client = app.systems.all()[backend]
    while client.breaker.state is not BreakerState.OPEN:
        assert time.monotonic() < deadline, "the breaker did not open"
        requests.get(
            f"{url}/system/v1/{backend}/customers",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )


def test_console_end_to_end(
    browser: Browser,
    console_gateway: GatewayThread,
    sandbox: SandboxThread,
    partner: Receiver,
    api_token: str,
    tmp_path: Path,
) -> None:
    url, app = console_gateway.url, console_gateway.app
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    watched = Watched(page, url)

    # --- sign-in: wrong secret refused, right one lands on the overview ----------------------
    sign_in(page, url, "not-the-secret")
    expect(page.locator("#login-error")).to_contain_text("Wrong client id or secret")
    shoot(page, tmp_path, "sign-in")
    sign_in(page, url, f"{ADMIN}-secret")
    expect(page).to_have_url(url + "/console")
    [cookie] = [c for c in context.cookies() if c["name"] == "trellis_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"

    # --- overview: six backends, reachable, breakers closed --------------------------------
    rows = page.locator("#backends tbody tr")
    expect(rows).to_have_count(len(BACKEND_NAMES))
    for name in BACKEND_NAMES:
        row = page.locator(f'#backends tr[data-backend="{name}"]')
        expect(row.locator('[data-field="reachable"]')).to_have_text("yes")
        expect(row.locator('[data-field="breaker"]')).to_have_text("closed")
    # the live refresh ran and drew the charts (uPlot made canvases under the CSP)
    expect(page.locator("body[data-refreshed]")).to_have_count(1, timeout=15_000)
    expect(page.locator(".chart canvas").first).to_be_attached(timeout=15_000)

    # --- a sandbox fault: the ERP breaker opens on the page, without a reload --------------
    set_faults(sandbox, "erp", {"error_rate": 1.0})
    try:
        open_breaker(app, url, api_token, "erp")
        erp = page.locator('#backends tr[data-backend="erp"]')
        expect(erp.locator('[data-field="breaker"]')).to_contain_text("open", timeout=15_000)
        expect(erp.locator('[data-field="breaker"]')).to_contain_text("half-opens in")
        expect(erp.locator('[data-field="reachable"]')).to_contain_text("no", timeout=15_000)
        shoot(page, tmp_path, "breaker-open")
    finally:
        set_faults(sandbox, "erp", None)

    # --- a dead letter, replayed from the events page --------------------------------------
    partner.status = 500
    dead = event(subject=f"console-{uuid.uuid4().hex[:8]}")
    write_outbox(Path(app.settings.gateway.data_dir), [dead])
    app.events.wake()
    letter_id = wait_dead_letter(url, api_token, dead.id)
    partner.status = 200
    received = partner.received
    page.click("nav >> text=Events")
    # the event log shows the delivery dead-lettered, with each attempt's error
    delivery = page.locator(f'#events tr[data-event="{dead.id}"] details')
    expect(delivery.locator("summary")).to_contain_text("dead_lettered (2 attempts)")
    delivery.locator("summary").click()
    expect(delivery.locator(".attempts li")).to_have_count(2)
    row = page.locator(f'#dlq tr[data-letter="{letter_id}"]')
    expect(row).to_contain_text("dead")
    row.locator("details summary").click()
    expect(row.locator(".attempts li")).to_have_count(2)
    expect(row.locator(".attempts li").first).to_contain_text("500")
    shoot(page, tmp_path, "events")
    row.locator('input[type="checkbox"]').check()
    page.click("#dlq-replay")
    expect(page.locator("h1")).to_contain_text("Replay 1 dead letter?")
    page.click("#confirm")
    expect(page.locator("#dlq-notice")).to_contain_text("Replayed 1")
    deadline = time.monotonic() + 30
    while partner.received == received:
        assert time.monotonic() < deadline, "the replayed event was not delivered"
        time.sleep(0.1)
    page.goto(f"{url}/console/events?subject={dead.subject}")
    expect(page.locator(f'#events tr[data-event="{dead.id}"]')).to_contain_text(
        "delivered", timeout=15_000
    )
    expect(page.locator(f'#dlq tr[data-letter="{letter_id}"]')).to_have_count(0)

    # --- a request's trace, found by its X-Trace-Id ----------------------------------------
    r = requests.get(
        f"{url}/system/v1/inventory/stock/SKU-0001",
        headers={"Authorization": f"Bearer {api_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    trace_id = r.headers["x-trace-id"]
    page.click("nav >> text=Requests")
    page.fill("#trace-q", trace_id)
    page.click("#trace-find")
    spans = page.locator("#spans tbody tr")
    expect(page.locator("#trace h2")).to_contain_text(trace_id)
    expect(spans.first).to_contain_text("GET /system/v1/inventory/stock/{sku}")
    expect(page.locator('#spans tr[data-kind="client"]')).to_contain_text("GET inventory")
    link = page.locator("#tracing-ui")
    expect(link).to_have_attribute("href", f"http://tracing.invalid/trace/{trace_id}")
    shoot(page, tmp_path, "trace")
    # and by its request id
    page.fill("#trace-q", r.headers["x-request-id"])
    page.click("#trace-find")
    expect(page.locator("#trace h2")).to_contain_text(trace_id)

    # --- clients and config ----------------------------------------------------------------
    page.click("nav >> text=Clients")
    expect(page.locator(f'#clients tr[data-client="{ADMIN}"]')).to_contain_text("admin")
    shoot(page, tmp_path, "clients")
    page.click("nav >> text=Config")
    expect(page.locator("#config")).to_contain_text("[REDACTED]")
    shoot(page, tmp_path, "config", full_page=False)  # the first screenful of many

    # --- the overview again, after all that traffic: the charts have points ---------------
    close_breaker(app, url, api_token, "erp")  # the fault is gone: a trial call closes it
    page.click("nav >> text=Overview")
    expect(page.locator("body[data-refreshed]")).to_have_count(1, timeout=15_000)
    expect(page.locator('#backends tr[data-backend="erp"] [data-field="breaker"]')).to_have_text(
        "closed", timeout=15_000
    )
    shoot(page, tmp_path, "overview")

    # --- sign out: back to the form, and the old cookie is refused -------------------------
    page.click("#sign-out")
    expect(page).to_have_url(url + "/console/login")
    page.goto(url + "/console")
    expect(page).to_have_url(url + "/console/login")
    stale = requests.get(
        url + "/console",
        cookies={"trellis_console": cookie["value"]},
        allow_redirects=False,
        timeout=30,
    )
    assert stale.status_code == 303 and stale.headers["location"] == "/console/login"

    assert not watched.problems, watched.problems
    context.close()
