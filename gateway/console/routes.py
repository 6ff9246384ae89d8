"""The console's pages and its one JSON feed, server-rendered with Jinja2.

Every page but the sign-in form and the static files needs a signed-in operator (``auth``);
every POST but sign-in needs the page's CSRF token and must not come from another origin.
Responses carry a strict Content-Security-Policy: scripts and styles only from
``/console/static/``, no inline script, no other origin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.events.admin import AdminStore
from gateway.events.component import EventBus
from gateway.events.records import DeadLetterStatus, DeliveryState, ReplayOutcome
from system_apis.registry import SystemApis

from ..settings import Settings
from . import sources
from .auth import COOKIE, CSRF_FIELD, ConsoleAuth, ConsoleUser, same_origin
from .forms import BadForm, Form, read_form
from .history import History
from .settings_view import config_rows
from .spans import SpanRing
from .trace_share import Lookup, TraceShare

PREFIX = "/console"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    # browsers then send a real Origin (not "null") with the console's own form posts
    "Referrer-Policy": "same-origin",
}

STATIC_FILES: dict[str, str] = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
}
"""The only files served: an allow-list, so no request path reaches the file system."""

_when = TypeAdapter(datetime)

Handler = Callable[[Request, ConsoleUser], Awaitable[Response]]


@cache
def _static(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        auto_reload=False,  # the templates ship with the package: no stat() on every render
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ms"] = lambda s: "\u2013" if s is None else f"{s * 1000:.1f} ms"
    env.filters["pct"] = lambda r: "\u2013" if r is None else f"{r * 100:.1f} %"
    env.filters["rate"] = lambda r: f"{r:.2f}/s"
    env.filters["num"] = lambda n: f"{n:,.0f}"
    env.filters["when"] = lambda t: (
        "\u2013"
        if t is None
        else (t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
    )
    return env


def _root(request: Request) -> str:
    """The console's URL path under the gateway's own root path (inside the mount,
    ``root_path`` already ends in PREFIX; ``app_root_path`` is the app's)."""
    scope = request.scope
    return str(scope.get("app_root_path", scope.get("root_path", ""))) + PREFIX


def _redirect(request: Request, path: str = "") -> RedirectResponse:
    return RedirectResponse(_root(request) + path, 303, headers=_HEADERS)


def _time(raw: str | None) -> datetime | None:
    """A filter's time: RFC 3339, or the ``datetime-local`` form value (taken as UTC)."""
    if not raw:
        return None
    try:
        value = _when.validate_python(raw)
    except ValidationError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ConsolePages:
    def __init__(
        self,
        settings: Settings,
        *,
        auth: ConsoleAuth,
        systems: SystemApis,
        events: EventBus,
        history: History,
        reachability: sources.Reachability,
        spans: SpanRing,
        share: TraceShare | None = None,
        limit_rejections: Callable[[], Mapping[str, int]],
        tracing_exporter: str,
        config_dir: Path | None,
    ) -> None:
        self.settings = settings
        self.config = settings.observability.console
        self.auth = auth
        self.systems = systems
        self.events = events
        self.history = history
        self.reachability = reachability
        self.spans = spans
        self.share = share
        self.limit_rejections = limit_rejections
        self.tracing_exporter = tracing_exporter
        self.config_dir = config_dir
        self.env = _environment()

    # --- plumbing -------------------------------------------------------------------------

    def render(
        self,
        name: str,
        request: Request,
        user: ConsoleUser | None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        root = _root(request)
        page = self.env.get_template(name).render(
            root=root,
            user=user,
            csrf=user.csrf if user else "",
            csrf_field=CSRF_FIELD,
            refresh_s=self.config.refresh_s,
            **context,
        )
        return HTMLResponse(page, status_code=status, headers={**_HEADERS, **(headers or {})})

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A GET page (or the overview's feed): signed-in operators only, others sent to the
        sign-in form."""

        async def endpoint(request: Request) -> Response:
            user = await self.auth.user(request)
            if user is None:
                return _redirect(request, "/login")
            return await handler(request, user)

        return endpoint

    def action(
        self, handler: Callable[[Request, ConsoleUser, Form], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST: signed in, same origin, and the page's CSRF token in the form."""

        async def endpoint(request: Request) -> Response:
            user = await self.auth.user(request)
            if user is None:
                return _redirect(request, "/login")
            if not same_origin(request):
                return self.refuse(request, user, 403, "This form was sent from another site.")
            try:
                form = await read_form(request)
            except BadForm as exc:
                return self.refuse(request, user, 400, f"Bad form: {exc}.")
            if not user.csrf_ok(form.get(CSRF_FIELD)):
                return self.refuse(request, user, 403, "The form's CSRF token is missing or wrong.")
            return await handler(request, user, form)

        return endpoint

    def refuse(self, request: Request, user: ConsoleUser | None, status: int, why: str) -> Response:
        return self.render("message.html", request, user, status=status, title="Refused", why=why)

    # --- sign-in --------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if await self.auth.user(request) is not None:
            return _redirect(request)
        expired = request.cookies.get(COOKIE) is not None
        return self.render("login.html", request, None, expired=expired, error=None)

    async def login(self, request: Request) -> Response:
        if not same_origin(request):
            return self.refuse(request, None, 403, "This form was sent from another site.")
        try:
            form = await read_form(request)
        except BadForm as exc:
            return self.refuse(request, None, 400, f"Bad form: {exc}.")
        client_id = (form.get("client_id") or "").strip()[:200]
        outcome = await self.auth.sign_in(request, client_id, form.get("client_secret") or "")
        if outcome.outcome == "ok" and outcome.token is not None:
            response = _redirect(request)
            self.auth.set_session(request, response, outcome.token, _root(request))
            return response
        if outcome.outcome == "limited":
            wait = int(outcome.retry_after_s or 1)
            return self.render(
                "login.html",
                request,
                None,
                status=429,
                headers={"Retry-After": str(wait)},
                expired=False,
                error=f"Too many sign-in attempts: wait {wait} s.",
            )
        error = (
            "This client does not hold the admin scope."
            if outcome.outcome == "not_admin"
            else "Wrong client id or secret."
        )
        status = 403 if outcome.outcome == "not_admin" else 401
        return self.render("login.html", request, None, status=status, expired=False, error=error)

    async def logout(self, request: Request, user: ConsoleUser, form: Form) -> Response:
        await self.auth.sign_out(user)
        response = _redirect(request, "/login")
        self.auth.clear_session(request, response, _root(request))
        return response

    # --- overview -------------------------------------------------------------------------

    async def _overview(self, series: bool) -> dict[str, Any]:
        reachable = await self.reachability.current()
        return sources.overview(
            self.systems.all(), reachable, self.history, self.limit_rejections(), series=series
        )

    async def overview(self, request: Request, user: ConsoleUser) -> Response:
        data = await self._overview(series=False)
        return self.render("overview.html", request, user, nav="overview", data=data)

    async def overview_json(self, request: Request, user: ConsoleUser) -> Response:
        data = await self._overview(series=True)
        return Response(orjson.dumps(data), media_type="application/json", headers=_HEADERS)

    # --- events ---------------------------------------------------------------------------

    @property
    def store(self) -> AdminStore:
        store: AdminStore = self.events.store
        return store

    async def events_page(self, request: Request, user: ConsoleUser) -> Response:
        q = request.query_params
        state = q.get("state") or None
        if state not in {s.value for s in DeliveryState}:
            state = None
        statuses = {s.value: s for s in DeadLetterStatus}
        dlq_status = q.get("dlq", "dead")
        if dlq_status != "all" and dlq_status not in statuses:
            dlq_status = "dead"
        selected = sources.EventFilter(
            type=(q.get("type") or "").strip() or None,
            subject=(q.get("subject") or "").strip() or None,
            state=state,
            since=_time(q.get("since")),
            until=_time(q.get("until")),
        )
        listed = await sources.events(self.store, self.events.wants, selected)
        letters = await sources.dead_letters(self.store, statuses.get(dlq_status))
        notice = {k: q.get(k) for k in ("replayed", "already", "missing", "discarded") if q.get(k)}
        return self.render(
            "events.html",
            request,
            user,
            nav="events",
            filter=selected,
            filter_raw={k: q.get(k, "") for k in ("type", "subject", "since", "until")},
            states=[s.value for s in DeliveryState],
            dlq_status=dlq_status,
            dlq_statuses=[*(s.value for s in DeadLetterStatus), "all"],
            events=listed,
            letters=letters,
            letter_by_id={letter.id: letter for letter in letters},
            alerts=sources.alert_rows(self.events.alerts.history),
            notice=notice,
        )

    async def dlq_confirm(self, request: Request, user: ConsoleUser, form: Form) -> Response:
        action = form.get("action")
        ids = [i for i in form.all("id") if i][:1000]
        if action not in ("replay", "discard") or not ids:
            return self.refuse(request, user, 400, "Select dead letters and replay or discard.")
        return self.render("dlq_confirm.html", request, user, nav="events", action=action, ids=ids)

    async def dlq_apply(self, request: Request, user: ConsoleUser, form: Form) -> Response:
        action = form.get("action")
        ids = [i for i in form.all("id") if i][:1000]
        if action not in ("replay", "discard") or not ids or form.get("confirm") != "yes":
            return self.refuse(request, user, 400, "Nothing confirmed.")
        counts: dict[str, int] = {}
        if action == "replay":
            for result in await self.store.replay(ids):
                key = {
                    ReplayOutcome.REPLAYED: "replayed",
                    ReplayOutcome.ALREADY_DELIVERED: "already",
                }.get(result.outcome, "missing")
                counts[key] = counts.get(key, 0) + 1
            self.events.wake()
        else:
            reason = (form.get("reason") or "").strip()[:1000] or (
                f"discarded from the console by {user.principal.client_id}"
            )
            for letter_id in ids:
                done = await self.store.discard(letter_id, reason)
                key = "discarded" if done is not None else "missing"
                counts[key] = counts.get(key, 0) + 1
        query = "&".join(f"{k}={v}" for k, v in sorted(counts.items()))
        return _redirect(request, f"/events?{query}")

    # --- traces ---------------------------------------------------------------------------

    async def traces(self, request: Request, user: ConsoleUser) -> Response:
        key = (request.query_params.get("q") or "").strip()[:128]
        trace = None
        searched = bool(key)
        elsewhere: Lookup | None = None
        if key:
            trace_id = self.spans.trace_id_for(key)
            trace = self.spans.trace(trace_id) if trace_id else None
            if trace is None and self.share is not None:
                elsewhere = await self.share.lookup(key)
                trace = elsewhere.trace
        link = None
        if trace is not None and self.config.tracing_ui_url:
            link = self.config.tracing_ui_url.replace("{trace_id}", trace.trace_id)
        return self.render(
            "traces.html",
            request,
            user,
            nav="traces",
            q=key,
            searched=searched,
            trace=trace,
            elsewhere=elsewhere,
            shared=self.share is not None,
            link=link,
            recent=self.spans.recent_requests(),
            kept=len(self.spans),
            ring_size=self.spans.size,
            recording=self.tracing_exporter != "none" or self.config.record_spans,
        )

    # --- clients --------------------------------------------------------------------------

    async def clients(self, request: Request, user: ConsoleUser) -> Response:
        return self.render(
            "clients.html",
            request,
            user,
            nav="clients",
            clients=sources.client_rows(self.settings.clients, self.history),
            revoked=request.query_params.get("revoked"),
        )

    async def revoke(self, request: Request, user: ConsoleUser, form: Form) -> Response:
        jti = (form.get("jti") or "").strip()
        if not jti or len(jti) > 200:
            return self.refuse(request, user, 400, "Give the token's jti.")
        oauth = self.auth.oauth
        # an unknown jti's expiry is unknown: keep it as long as any token of ours can live
        until = time.time() + oauth.config.access_token_lifetime_s + oauth.config.leeway_s
        until = max(until, time.time() + self.config.session_ttl_s + oauth.config.leeway_s)
        await oauth.revocations.revoke(jti, until)
        return _redirect(request, "/clients?revoked=1")

    # --- config ---------------------------------------------------------------------------

    async def config_page(self, request: Request, user: ConsoleUser) -> Response:
        # reads the configuration files: off the event loop
        rows = await asyncio.to_thread(config_rows, self.settings, self.config_dir)
        return self.render("config.html", request, user, nav="config", rows=rows)

    # --- static ---------------------------------------------------------------------------

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            return Response(b"not found", 404, media_type="text/plain", headers=_HEADERS)
        return Response(
            await asyncio.to_thread(_static, name),  # read once, from disk, off the loop
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=3600", "Content-Security-Policy": CSP},
        )

    def routes(self) -> list[BaseRoute]:
        def route(
            path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str
        ) -> Route:
            return Route(path, endpoint, methods=[method], include_in_schema=False)

        return [
            route("/", self.page(self.overview), "GET"),
            route("/api/overview", self.page(self.overview_json), "GET"),
            route("/login", self.login_form, "GET"),
            route("/login", self.login, "POST"),
            route("/logout", self.action(self.logout), "POST"),
            route("/events", self.page(self.events_page), "GET"),
            route("/events/dlq/confirm", self.action(self.dlq_confirm), "POST"),
            route("/events/dlq/apply", self.action(self.dlq_apply), "POST"),
            route("/traces", self.page(self.traces), "GET"),
            route("/clients", self.page(self.clients), "GET"),
            route("/clients/revoke", self.action(self.revoke), "POST"),
            route("/config", self.page(self.config_page), "GET"),
            route("/static/{name:path}", self.static, "GET"),
        ]
