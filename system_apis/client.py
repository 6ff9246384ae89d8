"""The shared client base every backend module builds on.

One keep-alive connection pool per backend (an ``egress.OriginTransport``: the own HTTP/1.1
client on asyncio + httptools, or aiohttp where a proxy is needed; made in the gateway's
lifespan; another per origin for absolute URLs elsewhere), a timeout on every call, retries
only where safe with full-jitter backoff honouring Retry-After, a circuit breaker, a bulkhead
and an outbound pacer at the vendor's rate.

Transport failures map to typed errors: a timeout is ``BackendTimeout``, a body cut short or
any other connection failure ``BackendUnavailable``.

The breaker is shared by every caller, so it counts only the backend's own failures: timeouts,
connection failures and 5xx answers. A 4xx answer to our request is a healthy vendor saying no
(it closes the count), a 429 is neither, and a call refused by our own bulkhead or pacer
(``Saturated``) or by input checks before it (``ids``) never reaches the count.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree.ElementTree import Element

import orjson
from defusedxml import ElementTree as SafeET
from multidict import CIMultiDictProxy

from . import observe
from .backend_auth import AuthProvider, auth_query, make_auth_provider
from .config import BackendConfig
from .egress import OriginTransport, make_transport, tls_warning
from .errors import (
    BackendAuthFailed,
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    BadBackendData,
    CircuitOpen,
    Saturated,
)
from .resilience import (
    BreakerState,
    CircuitBreaker,
    OutboundPacer,
    OutboundQueueFull,
    Slots,
    full_jitter_backoff,
    parse_retry_after,
)
from .transport import (
    BodyCutShort,
    Origin,
    Response,
    ResponseTooLarge,
    TransportError,
    split_url,
)

log = logging.getLogger("trellis.system")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")
"""Characters ``quote(value, safe="")`` never escapes."""


class BackendResponse:
    """A backend's answer to one attempt; headers decoded on first use, as the transport's."""

    __slots__ = ("_response", "backend", "body", "status")

    def __init__(self, backend: str, response: Response) -> None:
        self.backend = backend
        self.status = response.status
        self.body = response.body
        self._response = response

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._response.headers

    def json(self) -> Any:
        """The body as JSON; garbage becomes ``BadBackendData``, never a traceback."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise BadBackendData(self.backend, f"malformed JSON body: {exc.msg}") from exc

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise BadBackendData(self.backend, "expected a JSON object")
        return data

    def xml(self) -> Element:
        try:
            root: Element = SafeET.fromstring(self.body)
        except Exception as exc:  # ParseError and defusedxml's bomb/entity refusals alike
            raise BadBackendData(self.backend, f"malformed XML body: {exc}") from exc
        return root


@dataclass(slots=True)
class ClientStats:
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class BackendClient:
    """Base of each backend's client. Subclasses add typed methods and the vendor mapping."""

    name: str = "backend"
    idempotency_header: str = "Idempotency-Key"

    def __init__(self, config: BackendConfig, base_url: str, name: str | None = None) -> None:
        if name:
            self.name = name
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.breaker = CircuitBreaker(config.breaker)
        self.pacer = OutboundPacer(config.rate_limit) if config.rate_limit else None
        self._bulkhead = Slots(config.max_concurrency)
        self.auth: AuthProvider = make_auth_provider(
            self.name, self.base_url, config.auth, config.timeouts.total_s
        )
        self._auth_query = auth_query(config.auth)
        """Credentials sent as query parameters (``api_key_query``), else empty."""
        self._origin, _ = split_url(self.base_url)
        self._base_path = urlsplit(self.base_url).path  # "" or a prefix such as "/api"
        self._transport: OriginTransport | None = None
        self._transports: dict[Origin, OriginTransport] = {}
        """Every transport of this client by origin, the base URL's included."""
        self._send_fn = self._send  # bound once: handed to the auth provider on every attempt
        self.stats = ClientStats()

    @property
    def bulkhead(self) -> Slots:
        """The cap on concurrent calls (``held`` of ``limit`` in use), read by the console."""
        return self._bulkhead

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._transport is None:
            if warning := tls_warning(self.config):
                log.warning(
                    "backend TLS verification is off: anyone on the path can read and change "
                    "its traffic",
                    extra={"backend": self.name, "warning": warning},
                )
            self._transport = self._make_transport(self._origin)
            self._transports[self._origin] = self._transport

    async def close(self) -> None:
        transports = list(self._transports.values())
        self._transports.clear()
        self._transport = None
        for transport in transports:
            await transport.close()

    def _make_transport(self, origin: Origin) -> OriginTransport:
        return make_transport(self.config, origin, name=self.name)

    def _route(self, url: str) -> tuple[OriginTransport, str]:
        """The transport and request target (path and query) for an absolute URL."""
        transport = self._transport
        if transport is None:
            raise RuntimeError(f"{self.name} client used before start()")
        base = self.base_url
        n = len(base)
        if url.startswith(base) and (len(url) == n or url[n] in "/?"):
            return transport, self._base_path + url[n:]
        origin, target = split_url(url)  # another origin (or another path on this one)
        other = self._transports.get(origin)
        if other is None:
            other = self._transports[origin] = self._make_transport(origin)
        return other, target

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | str | None,
        timeout_s: float,
    ) -> Response:
        """One exchange for the auth provider's token fetch (``backend_auth.Send``)."""
        transport, target = self._route(url)
        return await transport.request(
            method, target, headers=headers, body=body, timeout_s=timeout_s
        )

    # --- the one way out ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        authenticated: bool = True,
    ) -> BackendResponse:
        """Send one logical call (maybe several attempts); raise a typed ``BackendError``."""
        method = method.upper()
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        hdrs: dict[str, str] = dict(headers) if headers else {}
        body: bytes | str | None = data
        if json is not None:
            body = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        if idempotency_key:
            hdrs[self.idempotency_header] = idempotency_key
        if authenticated and self._auth_query:  # ours last: a caller's value never replaces it
            params = {**(params or {}), **self._auth_query}
        retry_safe = method in SAFE_METHODS or idempotency_key is not None
        policy = self.config.retry
        attempts = policy.max_attempts
        self.stats.calls += 1
        last_error: BackendError | None = None
        auth_refreshed = False
        attempt = 0
        breaker = self.breaker
        while attempt < attempts:
            state = breaker.state  # read once: closed (the usual case) needs no trial slot
            if state is not BreakerState.CLOSED:
                if not breaker.try_acquire() and not (
                    # half-open, its trial running: share the trial's verdict
                    state is BreakerState.HALF_OPEN
                    and await breaker.await_trial(self.config.timeouts.total_s)
                ):
                    if last_error is not None:
                        # opened by others while this call was failing: report why this one
                        # failed (a timeout stays a timeout), not the breaker it then met
                        break
                    raise CircuitOpen(
                        self.name, "circuit open", retry_after=breaker.retry_in() or None
                    )
                state = breaker.state
            wait_hint: float | None = None
            last_status: int | None = None
            try:
                with observe.attempt(self.name, method, attempt + 1, state) as seen:
                    resp = await self._attempt(method, url, params, body, hdrs, authenticated, seen)
                    seen.status = resp.status
            except Saturated:  # our own limit refused it: nothing sent, no verdict on the
                breaker.release_trial()  # backend, and the queue is as long on a retry
                raise
            except BackendError as exc:  # timeout, connection failure, oversized answer
                self.breaker.record_failure()
                last_error = exc
            except asyncio.CancelledError:
                self.breaker.release_trial()
                raise
            else:
                status = last_status = resp.status
                self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
                if status < 300:
                    self.breaker.record_success()
                    return resp
                if status < 400:  # redirects are not followed: no answer to this call
                    self.breaker.record_success()  # the vendor is up; the URL is not its API
                    log.warning(
                        "backend answered a redirect",
                        extra={"backend": self.name, "status": status},
                    )
                    self.stats.failures += 1
                    raise BadBackendData(
                        self.name, f"answered {status}: redirects are not followed (base_url?)"
                    )
                if status == 401 and authenticated and self.auth.refreshable and not auth_refreshed:
                    # A cached token may have been revoked or expired early: refresh once.
                    self.breaker.release_trial()
                    self.auth.invalidate()
                    auth_refreshed = True
                    continue
                if status in policy.retry_on_status:
                    wait_hint = parse_retry_after(resp.headers.get("Retry-After"))
                    if status >= 500:
                        self.breaker.record_failure()
                    else:  # 429: the vendor is healthy, just busy
                        self.breaker.release_trial()
                    last_error = BackendUnavailable(
                        self.name, f"answered {status}", retry_after=wait_hint
                    )
                    if status == 504:
                        last_error = BackendTimeout(self.name, "backend answered 504")
                else:
                    self.breaker.record_success()  # the vendor works; our request was refused
                    raise self._client_error(resp)
            attempt += 1
            if attempt >= attempts:
                break
            if not retry_safe and last_status != 429:
                break  # a write without an idempotency key may have been applied: never resend;
                # a 429 says the vendor did not process it, so even a plain POST may go again
            delay = full_jitter_backoff(attempt - 1, policy.base_delay_s, policy.max_delay_s)
            if wait_hint is not None:
                if wait_hint > policy.max_retry_after_s:
                    break  # the vendor asks for longer than a caller should wait: fail fast
                delay = max(delay, wait_hint)
            self.stats.retries += 1
            log.info(
                "retrying backend call",
                extra={"backend": self.name, "attempt": attempt + 1, "delay_s": round(delay, 3)},
            )
            await asyncio.sleep(delay)
        self.stats.failures += 1
        assert last_error is not None
        raise last_error

    async def _attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, str | int] | None,
        body: bytes | str | None,
        headers: dict[str, str],
        authenticated: bool,
        seen: observe.AttemptInfo,
    ) -> BackendResponse:
        timeouts = self.config.timeouts
        if self.pacer is not None and not await self.pacer.acquire(timeout_s=timeouts.total_s):
            raise OutboundQueueFull(self.name, "outbound rate limit queue is full")
        bulkhead = self._bulkhead
        if not bulkhead.try_take():  # full: wait for a slot, but not for ever
            deadline = asyncio.get_running_loop().time() + timeouts.connect_s
            try:
                await bulkhead.take(deadline)
            except TimeoutError as exc:
                raise Saturated(self.name, "too many calls in flight (bulkhead full)") from exc
        try:
            self.stats.attempts += 1
            transport, target = self._route(url)
            # one merged dict per attempt: the caller's headers, credentials, trace context
            # (the attempt's own, as ``observe.trace_headers()`` would read it back)
            extra = None
            if authenticated:  # credentials known without I/O in the usual case: no await
                extra = self.auth.ready_headers()
                if extra is None:
                    extra = await self.auth.headers(self._send_fn)
            traceparent = seen.traceparent
            if extra or traceparent is not None:
                merged = {**headers, **extra} if extra else dict(headers)
                if traceparent is not None:
                    merged["traceparent"] = traceparent
                    if seen.tracestate:
                        merged["tracestate"] = seen.tracestate
                headers = merged
            resp = await transport.request(
                method,
                target,
                params=params,
                headers=headers,
                body=body,
                # a stale pooled connection is re-sent once only where a resend is harmless
                idempotent=method in SAFE_METHODS or self.idempotency_header in headers,
            )
            return BackendResponse(self.name, resp)
        except TimeoutError as exc:
            raise BackendTimeout(self.name, "no answer within the timeout") from exc
        except BodyCutShort as exc:
            raise BackendUnavailable(self.name, "response body cut short") from exc
        except ResponseTooLarge as exc:
            limit = self.config.max_response_bytes
            raise BadBackendData(self.name, f"response larger than {limit} bytes") from exc
        except (TransportError, OSError) as exc:
            raise BackendUnavailable(self.name, f"connection failed: {type(exc).__name__}") from exc
        finally:
            bulkhead.give_back()

    def _client_error(self, resp: BackendResponse) -> BackendError:
        detail = _vendor_message(resp)
        error: BackendError
        if resp.status == 404:
            error = BackendNotFound(self.name, detail or "not found")
        elif resp.status == 409:
            error = BackendConflict(self.name, detail or "conflict")
        elif resp.status in (401, 403):
            log.error("backend refused our credentials", extra={"backend": self.name})
            error = BackendAuthFailed(self.name, f"answered {resp.status} to our credentials")
        else:
            error = BackendRejected(
                self.name, detail or f"answered {resp.status}", upstream_status=resp.status
            )
        try:
            error.vendor_body = orjson.loads(resp.body) if resp.body else None
        except orjson.JSONDecodeError:
            error.vendor_body = None
        return error

    def segment(self, value: str) -> str:
        """One URL path segment from a caller-supplied id: quoted, and never ``.`` or ``..``
        (which the URL would resolve to another path, sent with our credentials)."""
        if value in ("", ".", ".."):
            raise BackendNotFound(self.name, f"no record {value!r}")
        if _PLAIN_SEGMENT.fullmatch(value):  # what quote() leaves as it is: the usual id
            return value
        return quote(value, safe="")

    # --- health ---------------------------------------------------------------------------

    async def ping(self, timeout_s: float = 1.0) -> str | None:
        """None if the backend answers its health path, else the reason it does not."""
        if self.breaker.state is BreakerState.OPEN:
            return "circuit open"
        try:
            transport, target = self._route(f"{self.base_url}{self.config.health_path}")
            resp = await transport.request("GET", target, timeout_s=timeout_s)
            return None if resp.status < 500 else f"health check answered {resp.status}"
        except TimeoutError:
            return "health check timed out"
        except (TransportError, OSError) as exc:
            return f"unreachable ({type(exc).__name__})"


def _vendor_message(resp: BackendResponse) -> str:
    """A short, safe message from a vendor's error body (never the whole body)."""
    try:
        data = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict):
        for key in ("message", "error_description", "detail", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str):
                return value[:200]
    return ""
