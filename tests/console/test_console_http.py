"""The console over plain HTTP: who gets in, the cookie, CSRF, expiry, the CSP, the static
allow-list, revocation by jti, and numbers that agree with /metrics."""

from __future__ import annotations

import base64
import re
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from starlette.requests import Request
from starlette.responses import Response

from gateway.console.auth import COOKIE, ConsoleAuth
from gateway.console.routes import CSP, STATIC_DIR
from tests.console.conftest import ADMIN, NOT_ADMIN, Receiver
from tests.console.helpers import wait_dead_letter
from tests.docs.live import GatewayThread
from tests.events.helpers import event, write_outbox
from tests.eventually import eventually_sync

PAGES = ("/console", "/console/events", "/console/traces", "/console/clients", "/console/config")
ACTIONS = (
    "/console/logout",
    "/console/events/dlq/confirm",
    "/console/events/dlq/apply",
    "/console/clients/revoke",
)


def sign_in(
    gw: GatewayThread, client_id: str = ADMIN, secret: str | None = None
) -> requests.Session:
    s = requests.Session()
    r = s.post(
        gw.url + "/console/login",
        data={"client_id": client_id, "client_secret": secret or f"{client_id}-secret"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303, r.text
    return s


@pytest.fixture(scope="module")
def session(console_gateway: GatewayThread) -> requests.Session:
    """One signed-in operator for the tests that do not sign out (sign-ins are limited)."""
    return sign_in(console_gateway)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_every_page_and_action_needs_a_session(console_gateway: GatewayThread) -> None:
    for path in (*PAGES, "/console/api/overview"):
        r = requests.get(console_gateway.url + path, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"] == "/console/login", path
    for path in ACTIONS:
        r = requests.post(console_gateway.url + path, data={}, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"] == "/console/login", path
    # a forged cookie is no session either
    forged = requests.get(
        console_gateway.url + "/console",
        cookies={COOKIE: "eyJhbGciOiJub25lIn0.eyJzY29wZSI6ImFkbWluIn0."},
        allow_redirects=False,
        timeout=30,
    )
    assert forged.status_code == 303


def test_sign_in_sets_a_strict_short_lived_cookie_bound_to_the_client(
    console_gateway: GatewayThread,
) -> None:
    r = requests.post(
        console_gateway.url + "/console/login",
        data={"client_id": ADMIN, "client_secret": f"{ADMIN}-secret"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303 and r.headers["location"] == "/console"
    header = r.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "samesite=strict" in header.lower() and "path=/console" in header.lower()
    assert "max-age=120" in header.lower()
    assert "secure" not in attributes  # plain HTTP here; see the TLS test below
    token = r.cookies[COOKIE]
    issued = claims(token)
    assert issued["client_id"] == ADMIN and issued["scope"] == "admin"
    assert issued["exp"] - issued["iat"] == 120


async def test_the_cookie_is_secure_over_tls(console_gateway: GatewayThread) -> None:
    app = console_gateway.app
    auth = ConsoleAuth(app.oauth, app.settings.observability.console)
    response = Response()
    for scheme, secure in (("https", True), ("http", False)):
        request = Request(
            {
                "type": "http",
                "scheme": scheme,
                "method": "POST",
                "path": "/",
                "headers": [(b"host", b"console.example")],
                "query_string": b"",
            }
        )
        response = Response()
        auth.set_session(request, response, "token")
        assert ("secure" in response.headers["set-cookie"].lower()) is secure


def test_a_sign_in_posted_from_another_site_is_refused(console_gateway: GatewayThread) -> None:
    """Login CSRF: another site must not sign a browser in under the attacker's client."""
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        r = requests.post(
            console_gateway.url + "/console/login",
            data={"client_id": ADMIN, "client_secret": f"{ADMIN}-secret"},
            headers=headers,
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 403 and "set-cookie" not in r.headers, headers


def test_a_client_without_admin_cannot_sign_in(console_gateway: GatewayThread) -> None:
    r = requests.post(
        console_gateway.url + "/console/login",
        data={"client_id": NOT_ADMIN, "client_secret": f"{NOT_ADMIN}-secret"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 403 and "admin scope" in r.text
    assert "set-cookie" not in r.headers


def test_wrong_credentials_are_rate_limited_like_the_token_endpoint(
    console_gateway: GatewayThread,
) -> None:
    """20/minute per client id and address (the test gateway's token_endpoint_limits), shared
    with /oauth/token: the guard and its counters are the same."""
    claimed = f"intruder-{uuid.uuid4().hex[:8]}"
    statuses = []
    for _ in range(20):
        r = requests.post(
            console_gateway.url + "/console/login",
            data={"client_id": claimed, "client_secret": "guess"},
            allow_redirects=False,
            timeout=30,
        )
        statuses.append(r.status_code)
    assert statuses == [401] * 20
    refused = requests.post(
        console_gateway.url + "/console/login",
        data={"client_id": claimed, "client_secret": "guess"},
        allow_redirects=False,
        timeout=30,
    )
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    token = requests.post(
        console_gateway.url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(claimed, "guess"),
        timeout=30,
    )
    assert token.status_code == 429


def test_state_changes_need_the_csrf_token_and_the_same_origin(
    console_gateway: GatewayThread,
) -> None:
    s = sign_in(console_gateway)
    page = s.get(console_gateway.url + "/console", timeout=30)
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    url = console_gateway.url + "/console/logout"
    for form, headers in (
        ({"reason": ""}, {}),
        ({"csrf": "not-the-token"}, {}),
        ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
        ({"csrf": csrf}, {"Origin": "https://evil.example"}),
    ):
        r = s.post(url, data=form, headers=headers, allow_redirects=False, timeout=30)
        assert r.status_code == 403, (form, headers)
        assert s.get(console_gateway.url + "/console", allow_redirects=False).status_code == 200
    # another session's token is not this one's
    other = sign_in(console_gateway)
    other_csrf = csrf_of(other.get(console_gateway.url + "/console", timeout=30).text)
    assert other_csrf != csrf
    r = s.post(url, data={"csrf": other_csrf}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    # the right one signs out: the token is revoked, not only the cookie dropped
    cookie = s.cookies[COOKIE]
    r = s.post(url, data={"csrf": csrf}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert (
        f"{COOKIE}=" in r.headers["set-cookie"] and "max-age=0" in r.headers["set-cookie"].lower()
    )
    again = requests.get(
        console_gateway.url + "/console", cookies={COOKIE: cookie}, allow_redirects=False
    )
    assert again.status_code == 303


def test_a_session_expires(console_gateway: GatewayThread) -> None:
    app = console_gateway.app
    token = app.oauth.issue(ADMIN, ["admin"], 1).access_token
    ok = requests.get(
        console_gateway.url + "/console", cookies={COOKIE: token}, allow_redirects=False
    )
    assert ok.status_code == 200
    time.sleep(2.1)
    gone = requests.get(
        console_gateway.url + "/console", cookies={COOKIE: token}, allow_redirects=False
    )
    assert gone.status_code == 303 and gone.headers["location"] == "/console/login"
    form = requests.get(console_gateway.url + "/console/login", cookies={COOKIE: token})
    assert "session has ended" in form.text


def test_an_admin_bearer_token_enters_without_the_form(
    console_gateway: GatewayThread, api_token: str
) -> None:
    """What an SSO proxy in front does: it adds a token with admin to every request."""
    r = requests.get(
        console_gateway.url + "/console/clients",
        headers={"Authorization": f"Bearer {api_token}"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 200 and "ops-admin" in r.text
    weak = console_gateway.token(NOT_ADMIN)
    r = requests.get(
        console_gateway.url + "/console",
        headers={"Authorization": f"Bearer {weak}"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303


def test_pages_have_a_strict_csp_and_no_inline_script(
    console_gateway: GatewayThread, session: requests.Session
) -> None:
    s = session
    for path in (*PAGES, "/console/login"):
        r = s.get(console_gateway.url + path, timeout=30)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.S)
        assert scripts and all("src=" in a and not body.strip() for a, body in scripts), path
        assert " style=" not in r.text and "<style" not in r.text, path
        assert not re.search(r"\son[a-z]+=", r.text), path  # no inline event handlers
        refs = re.findall(r'(?:src|href)="([^"]*)"', r.text)
        local = [ref for ref in refs if not ref.startswith("/console")]
        assert not local, (path, local)


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("vendor/uPlot.iife.min.js", True),
        ("vendor/uPlot.min.css", True),
        ("console.js", True),
        ("vendor/uPlot.LICENSE", False),
        ("../routes.py", False),
        ("..%2Froutes.py", False),
        ("templates/base.html", False),
    ],
)
def test_only_listed_static_files_are_served(
    console_gateway: GatewayThread, name: str, found: bool
) -> None:
    r = requests.get(f"{console_gateway.url}/console/static/{name}", timeout=30)
    if found:
        assert r.status_code == 200 and r.content == (STATIC_DIR / name).read_bytes()
        assert r.headers["content-security-policy"] == CSP
    else:
        assert r.status_code == 404


def test_revoking_a_jti_refuses_that_token_everywhere(
    console_gateway: GatewayThread, session: requests.Session
) -> None:
    victim = console_gateway.token(NOT_ADMIN)
    url = console_gateway.url + "/system/v1/inventory/stock/SKU-0001"
    bearer = {"Authorization": f"Bearer {victim}"}
    assert requests.get(url, headers=bearer, timeout=30).status_code == 200
    s = session
    csrf = csrf_of(s.get(console_gateway.url + "/console/clients", timeout=30).text)
    r = s.post(
        console_gateway.url + "/console/clients/revoke",
        data={"csrf": csrf, "jti": claims(victim)["jti"]},
        timeout=30,
    )
    assert r.status_code == 200 and "is revoked" in r.text
    refused = requests.get(url, headers=bearer, timeout=30)
    assert refused.status_code == 401


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_overview_numbers_agree_with_metrics(
    console_gateway: GatewayThread, session: requests.Session, api_token: str
) -> None:
    for sku in ("SKU-0001", "SKU-0002", "SKU-0003"):
        requests.get(
            f"{console_gateway.url}/system/v1/inventory/stock/{sku}",
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=30,
        )
    s = session
    overview = s.get(console_gateway.url + "/console/api/overview", timeout=30).json()
    metrics = requests.get(
        console_gateway.url + "/metrics",
        headers={"Authorization": f"Bearer {api_token}"},
        timeout=30,
    ).text
    rows = {b["name"]: b for b in overview["backends"]}
    assert rows["inventory"]["attempts_total"] >= 3
    for name, row in rows.items():
        assert row["attempts_total"] == metric_sum(
            metrics, "trellis_backend_requests_total", backend=name
        ), name
        assert row["errors_total"] == metric_sum(
            metrics, "trellis_backend_errors_total", backend=name
        ), name
        assert (
            metric_sum(metrics, "trellis_backend_breaker_state", backend=name, state=row["breaker"])
            == 1.0
        )
    inventory = rows["inventory"]
    assert inventory["w5"]["count"] >= 3 and inventory["w5"]["p50"] is not None
    # a chart point joins two samples (one a second here): right after start there may be one

    def series_points() -> list[float]:
        data = s.get(console_gateway.url + "/console/api/overview", timeout=30).json()
        points: list[float] = {b["name"]: b for b in data["backends"]}["inventory"]["series"]["w5"][
            "t"
        ]
        return points

    assert eventually_sync(series_points, message="no chart point for inventory")


def test_discarding_many_dead_letters_takes_a_confirmation(
    console_gateway: GatewayThread, session: requests.Session, partner: Receiver, api_token: str
) -> None:
    app = console_gateway.app
    partner.status = 500
    try:
        subject = f"discard-{uuid.uuid4().hex[:8]}"
        evs = [event(subject=subject), event(subject=subject)]
        write_outbox(Path(app.settings.gateway.data_dir), evs)
        app.events.wake()
        letters = [wait_dead_letter(console_gateway.url, api_token, e.id) for e in evs]
    finally:
        partner.status = 200
    s = session
    page = s.get(console_gateway.url + "/console/events", timeout=30).text
    for letter in letters:
        assert f'data-letter="{letter}"' in page
    csrf = csrf_of(page)
    form = [("csrf", csrf), ("action", "discard"), ("reason", "partner retired")]
    form += [("id", letter) for letter in letters]
    confirm = s.post(console_gateway.url + "/console/events/dlq/confirm", data=form, timeout=30)
    assert confirm.status_code == 200 and "Discard 2 dead letters?" in confirm.text
    # nothing happened yet: asking is not doing
    assert all(
        f'data-letter="{x}"' in s.get(console_gateway.url + "/console/events").text for x in letters
    )
    without = s.post(console_gateway.url + "/console/events/dlq/apply", data=form, timeout=30)
    assert without.status_code == 400  # the confirmation page's "confirm" field is needed
    done = s.post(
        console_gateway.url + "/console/events/dlq/apply",
        data=[*form, ("confirm", "yes")],
        timeout=30,
    )
    assert done.status_code == 200 and "Discarded 2" in done.text
    for letter in letters:
        assert f'data-letter="{letter}"' not in done.text
    shown = s.get(console_gateway.url + "/console/events?dlq=discarded", timeout=30).text
    for letter in letters:
        assert f'data-letter="{letter}"' in shown
    assert "discarded: partner retired" in shown
