"""Rate limiting: per-tier and per-route budgets on ``limits.aio``, headers per the IETF draft.

Who is limited: an authenticated caller by client id under its principal's tier; everyone else
by source address. Several named limits may apply at once (``burst`` and ``sustained``); all must
pass. Counters live in process memory, or in Redis when ``redis_url`` is set so that every
gateway process shares one budget: ``shared.mode: synced`` (the default) decides on local
counters synced to Redis every ``sync_interval_ms`` (``synced_window.py``, accuracy bound in
docs/decisions.md); ``exact`` (or a route's ``exact: true``) spends the shared counters on
every request. The check never blocks the event loop (``limits.aio``, not
slowapi: see docs/decisions.md) and is bounded by a time budget, so a stalled Redis costs a
request at most ``storage_timeout_ms`` and is then handled like a Redis that is down: fail open
or closed as configured, logged and counted.

Headers follow draft-ietf-httpapi-ratelimit-headers (structured fields):
``RateLimit-Policy: "burst";q=10;w=1, "sustained";q=60;w=60`` on every limited response,
``RateLimit: "sustained";r=42;t=17`` naming the most constrained policy, and on 429 only a
``Retry-After`` that never points before the caller could be admitted again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, SlidingWindowCounterSupport
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.policies.scope_keys import RESPONSE_HEADERS_KEY
from gateway.policies.sliding_window import SlidingWindowCounters
from gateway.policies.synced_window import SyncedCounters, sync_timeout_s
from gateway.principal import principal_of
from gateway.problems import problem_response
from gateway.stores.limits_storage import LimitsStorage, open_limits_storage
from gateway.stores.redis_options import DEFAULT_PREFIX

log = logging.getLogger("trellis.ratelimit")

Strategy = Literal["fixed-window", "sliding-window-counter", "moving-window"]
UNAUTHENTICATED = "unauthenticated"
"""The counter label of callers without a principal (limited per source address)."""

_STRATEGIES: dict[str, type[RateLimiter]] = {
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "moving-window": MovingWindowRateLimiter,
}
_POLICY_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
_PATH_PARAM = re.compile(r"\{[^{}/]+\}")
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --------------------------------------------------------------------------- configuration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


LimitSet = dict[str, str]
"""Named limits that apply together, e.g. ``{"burst": "10/second", "sustained": "60/minute"}``."""


def _check_limit_set(value: Mapping[str, str], where: str) -> None:
    if not value:
        raise ValueError(f"{where}: name at least one limit, e.g. {{sustained: 60/minute}}")
    for name, text in value.items():
        if not _POLICY_NAME.match(name):
            raise ValueError(
                f"{where}.{name}: a policy name is lower-case letters, digits, '_', '.', '-' "
                "(it is sent in the RateLimit-Policy header)"
            )
        try:
            item = parse(text)
        except ValueError:
            raise ValueError(
                f"{where}.{name}: {text!r} is not a limit like '60/minute' or '10 per second'"
            ) from None
        if item.amount < 1:
            raise ValueError(f"{where}.{name}: the quota must be at least 1")


def _default_tiers() -> dict[str, LimitSet]:
    return {
        "partner-standard": {"burst": "10/second", "sustained": "60/minute"},
        "internal": {"sustained": "6000/minute"},
        "external": {"burst": "20/second", "sustained": "600/minute"},
        "default": {"burst": "10/second", "sustained": "120/minute"},
    }


def _default_unauthenticated() -> LimitSet:
    return {"burst": "5/second", "sustained": "60/minute"}


def _default_exempt() -> list[str]:
    return ["/healthz", "/readyz", "/metrics", "/.well-known/", "/docs", "/openapi.json"]


class RouteLimits(Strict):
    """Limits for the routes under one path: they replace the global ones for the callers named.

    ``path`` is a prefix that may hold ``{param}`` segments (``/process/v1/orders/{id}``); it
    matches that path and everything below it. A route's counters are its own: spending them
    does not spend the global budget, and vice versa.
    """

    path: str = Field("/", pattern=r"^/", description="Path prefix or template, e.g. /oauth/token.")
    methods: list[str] | None = Field(None, description="Only these methods; default all.")
    tiers: dict[str, LimitSet] = Field(
        default_factory=dict,
        description="Per tier; '*' applies to every tier not listed. Unlisted: global limits.",
    )
    unauthenticated: LimitSet | None = Field(
        None, description="Per source address for callers without a token; None: global limits."
    )
    exact: bool = Field(
        False,
        description="Shared counters spent on every request (one Redis round trip each), even "
        "when shared.mode is synced: for limits that must never be exceeded.",
    )

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        upper = [m.upper() for m in value]
        unknown = sorted(set(upper) - _HTTP_METHODS)
        if unknown:
            raise ValueError(f"unknown HTTP method(s) {unknown}")
        return upper

    @model_validator(mode="after")
    def _limits(self) -> RouteLimits:
        for tier, limit_set in self.tiers.items():
            _check_limit_set(limit_set, f"tiers.{tier}")
        if self.unauthenticated is not None:
            _check_limit_set(self.unauthenticated, "unauthenticated")
        return self


class MemoryCounters(Strict):
    """The in-process counter table (no Redis): bounded whatever the number of callers."""

    max_keys: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="Keys held at most (a caller has one per limit of its set); a new key at "
        "the cap evicts the key whose window ended longest ago. ~250 bytes a key.",
    )
    sweep_batch: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Keys one sweep tick may look at (stale keys are swept once a second, a "
        "batch a request while a backlog lasts): bounds the pause of the event loop.",
    )


class SharedCounters(Strict):
    """How the counters are shared when they are in Redis (``gateway.redis_url`` set)."""

    mode: Literal["synced", "exact"] = Field(
        "synced",
        description="synced: decided on local counters, synced to Redis every sync_interval_ms "
        "(N processes may exceed a limit by what the others admit between two syncs); exact: "
        "one Redis round trip per limit and request. synced applies to the "
        "sliding-window-counter strategy; the others are always exact.",
    )
    sync_interval_ms: int = Field(
        100, ge=10, le=10_000, description="Time between two syncs of one process's counters."
    )


class RateLimitConfig(Strict):
    """The whole of ``config/ratelimit.yaml``."""

    enabled: bool = True
    strategy: Strategy = Field(
        "sliding-window-counter",
        description="fixed-window (cheapest, allows 2x at a boundary), sliding-window-counter "
        "(smooth, two counters per key), moving-window (exact, one entry per request).",
    )
    tiers: dict[str, LimitSet] = Field(
        default_factory=_default_tiers,
        description="Limits per principal tier; a tier not listed gets 'default'.",
    )
    unauthenticated: LimitSet = Field(
        default_factory=_default_unauthenticated,
        description="Limits per source address for requests without a principal.",
    )
    routes: list[RouteLimits] = Field(
        default_factory=list, description="Per-route overrides; the first match wins."
    )
    exempt_paths: list[str] = Field(
        default_factory=_default_exempt,
        description="Never limited: a path equal to or below each (health, metrics, well-known).",
    )
    fail_open: bool = Field(
        True, description="Storage down or too slow: let requests through (else 503)."
    )
    storage_timeout_ms: float = Field(
        50.0, gt=0, le=5000, description="Budget of one request's check; over it = storage down."
    )
    error_log_interval_s: float = Field(
        10.0, ge=0, description="At most one storage-error WARNING per interval."
    )
    namespace: str = Field(
        "trellis", pattern=r"^[A-Za-z0-9_.-]+$", description="Key prefix in a shared Redis."
    )
    memory: MemoryCounters = Field(
        default_factory=MemoryCounters, description="The in-process counters' bounds."
    )
    shared: SharedCounters = Field(
        default_factory=SharedCounters, description="Sharing of the counters in Redis."
    )

    @model_validator(mode="after")
    def _limits(self) -> RateLimitConfig:
        if "default" not in self.tiers:
            raise ValueError("tiers must define 'default' (it limits tiers not listed)")
        for tier, limit_set in self.tiers.items():
            _check_limit_set(limit_set, f"tiers.{tier}")
        _check_limit_set(self.unauthenticated, "unauthenticated")
        for path in self.exempt_paths:
            if not path.startswith("/"):
                raise ValueError(f"exempt_paths: {path!r} must start with '/'")
        return self


# --------------------------------------------------------------------------- policy engine


@dataclass(frozen=True, slots=True)
class Limit:
    """One named limit of a limit set, ready for ``limits``; quota and window read once."""

    name: str
    item: RateLimitItem
    quota: int = field(init=False)
    window_s: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quota", int(self.item.amount))
        object.__setattr__(self, "window_s", int(self.item.get_expiry()))


@dataclass(frozen=True, slots=True)
class LimitSetRule:
    """The limits that apply to one request, where their counters live, and their label;
    ``policy`` is their ``RateLimit-Policy`` header, rendered once."""

    label: str
    bucket: str
    limits: tuple[Limit, ...]
    exact: bool = False  # shared counters spent per request even in synced mode
    policy: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", policy_header(self.limits))


class LimitState(NamedTuple):
    """A limit after this request: what the ``RateLimit`` header reports.

    (A named tuple rather than a frozen dataclass, as ``Decision``: made on every request,
    and a frozen dataclass's ``__init__`` costs a ``object.__setattr__`` per field.)"""

    limit: Limit
    remaining: int
    reset_s: int


class Decision(NamedTuple):
    """One check's outcome; ``allowed`` False without ``violated``: storage failed closed."""

    allowed: bool
    rule: LimitSetRule
    states: tuple[LimitState, ...] = ()
    violated: LimitState | None = None
    storage_failed: bool = False


def _compile_set(limit_set: Mapping[str, str]) -> tuple[Limit, ...]:
    limits = [Limit(name, parse(text)) for name, text in limit_set.items()]
    # shortest window first: a caller refused by its burst limit does not spend its sustained one
    return tuple(sorted(limits, key=lambda lim: lim.window_s))


def _path_matcher(path: str) -> re.Pattern[str]:
    """``/a/{id}`` -> matches ``/a/7`` and ``/a/7/b``; a trailing ``/`` matches what is below it."""
    prefix = path.rstrip("/")
    parts = _PATH_PARAM.split(prefix)
    body = r"[^/]+".join(re.escape(p) for p in parts)
    if path.endswith("/") and path != "/":
        return re.compile(f"^{body}/")
    return re.compile(f"^{body}(?:/|$)")


def _literal_prefix(path: str) -> str:
    """What every path a ``_path_matcher(path)`` pattern matches starts with."""
    return path.split("{", 1)[0]


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    path: str
    prefix: str  # literal: tested before the pattern
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    tiers: dict[str, tuple[Limit, ...]]
    unauthenticated: tuple[Limit, ...] | None
    exact: bool


def _sliding_retry_after(
    quota: int, window: float, prev: int, prev_ttl: float, cur: int, cur_ttl: float
) -> float:
    """Seconds until the sliding-window counter admits one more request (never too early).

    ``limits`` admits while ``floor(prev * prev_ttl / window) + cur + 1 <= quota``; the current
    counter becomes the previous one when its TTL falls to ``window``. limits' own
    ``get_window_stats`` reset can be earlier than that, so Retry-After is computed here.
    """
    until_shift = max(0.0, cur_ttl - window)
    if cur < quota:
        if prev <= 0:
            return 0.0
        wait = prev_ttl - (quota - cur) * window / prev
        return min(max(0.0, wait), until_shift)
    # the current window is full: wait for it to become the previous one, then for its weight
    # to decay until floor(cur * w) <= quota - 1
    return until_shift + window * (1 - quota / cur)


def _whole_seconds(wait: float) -> int:
    """A wait as Retry-After: whole seconds, rounded up, at least 1."""
    # a little slack for clock granularity between this process and the storage
    return max(1, math.ceil(wait + 0.01))


class RateLimitPolicy:
    """The engine behind the middleware: rules, storage, counters. One per gateway process.

    ``decisions``, ``rejections`` and ``storage_errors`` count by limit-set label (a tier,
    ``unauthenticated``, or ``tier@/route``) for the metrics policy; ``stats()`` snapshots them.
    """

    def __init__(
        self,
        config: RateLimitConfig,
        redis_url: str | None = None,
        *,
        redis_prefix: str = DEFAULT_PREFIX,
        storage: LimitsStorage | None = None,
        max_connections: int = 32,
    ) -> None:
        self.config = config
        self.store = (
            storage
            if storage is not None
            else open_limits_storage(
                redis_url, prefix=redis_prefix, max_connections=max_connections
            )
        )
        self.shared = self.store.pool is not None
        self.strategy: RateLimiter = _STRATEGIES[config.strategy](self.store.storage)
        self.timeout_s = config.storage_timeout_ms / 1000
        self.decisions: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.storage_errors: Counter[str] = Counter()
        self._tiers = {tier: _compile_set(s) for tier, s in config.tiers.items()}
        self._unauthenticated = _compile_set(config.unauthenticated)
        self._exempt = tuple(_path_matcher(p) for p in config.exempt_paths)
        self._exempt_prefixes = tuple(_literal_prefix(p) for p in config.exempt_paths)
        self._routes = tuple(
            _CompiledRoute(
                path=r.path,
                prefix=_literal_prefix(r.path),
                pattern=_path_matcher(r.path),
                methods=frozenset(r.methods) if r.methods else None,
                tiers={t: _compile_set(s) for t, s in r.tiers.items()},
                unauthenticated=_compile_set(r.unauthenticated) if r.unauthenticated else None,
                exact=r.exact,
            )
            for r in config.routes
        )
        # the routes a request of each method can match, in order (a GET skips POST-only ones)
        methods = {m for r in self._routes for m in (r.methods or ())}
        self._routes_by_method = {
            m: tuple(r for r in self._routes if r.methods is None or m in r.methods)
            for m in methods | {"GET", "HEAD", "OPTIONS"}
        }
        self._last_warning = -math.inf
        self._suppressed = 0
        # The rules and their RateLimit-Policy headers are fixed by the config: made once, not
        # per request. Route rules are made on first use (keyed by route and tier).
        self._global_rules = {
            tier: LimitSetRule(tier, "global", limits) for tier, limits in self._tiers.items()
        }
        self._unauth_rule = LimitSetRule(UNAUTHENTICATED, "global", self._unauthenticated)
        self._route_rules: dict[tuple[int, str | None], LimitSetRule] = {}
        self._key_bases: dict[str, str] = {}  # bucket -> "namespace\x1fbucket\x1f"
        # In process memory the sliding-window counter (the default) is our own: a dict
        # lookup per limit, no awaits, no expiry task per request (sliding_window.py)
        self.counters: SlidingWindowCounters | None = None
        self.synced: SyncedCounters | None = None
        if config.strategy == "sliding-window-counter" and (
            type(self.store.storage) is MemoryStorage
            or (self.store.redis is not None and config.shared.mode == "synced")
        ):
            self.counters = SlidingWindowCounters(
                max_keys=config.memory.max_keys, sweep_batch=config.memory.sweep_batch
            )
            if self.store.redis is not None:  # synced to Redis in batches
                interval_s = config.shared.sync_interval_ms / 1000
                self.synced = SyncedCounters(
                    self.counters,
                    self.store.redis,
                    key_prefix=f"{self.store.prefix}limits:synced:",
                    interval_s=interval_s,
                    timeout_s=sync_timeout_s(self.timeout_s, interval_s),
                    on_error=self._sync_failed,
                )

    # ---- which limits apply

    def is_exempt(self, path: str) -> bool:
        # one C-level prefix test rules out almost every request before any pattern runs
        if not path.startswith(self._exempt_prefixes):
            return False
        return any(p.match(path) for p in self._exempt)

    def rule_for(self, scope: Scope) -> tuple[LimitSetRule, str]:
        """The limit set of this request and the identity its counters are kept under."""
        principal = principal_of(scope)
        if principal is not None:
            tier = principal.tier if principal.tier in self._tiers else "default"
            identity = "client:" + principal.client_id
        else:
            tier = UNAUTHENTICATED
            client = scope.get("client")
            identity = "addr:" + (str(client[0]) if client else "unknown")
        path, method = scope.get("path", "/"), scope.get("method", "GET")
        routes = self._routes_by_method.get(method)
        for route in self._routes if routes is None else routes:
            if route.methods is not None and method not in route.methods:
                continue
            if not path.startswith(route.prefix) or not route.pattern.match(path):
                continue
            if principal is None:
                limits = route.unauthenticated
            else:
                limits = route.tiers.get(principal.tier) or route.tiers.get("*")
            if limits is not None:
                key = (id(route), None if principal is None else principal.tier)
                rule = self._route_rules.get(key)
                if rule is None:
                    rule = LimitSetRule(
                        f"{tier}@{route.path}", f"route:{route.path}", limits, route.exact
                    )
                    self._route_rules[key] = rule
                return rule, identity
            break  # first matching route wins; it does not name this caller: global limits
        if principal is None:
            return self._unauth_rule, identity
        return self._global_rules[tier], identity

    # ---- the check

    def check_in_memory(self, scope: Scope) -> Decision | None:
        """``check`` without an await when the counters are this process's own (the default);
        None when they are elsewhere (Redis, or a strategy of ``limits``). An admission's
        ``states`` holds the most constrained limit only: what the ``RateLimit`` header
        reports."""
        if self.counters is None:
            return None
        rule, found = self._in_memory(scope)
        if rule is None:
            return None
        if isinstance(found, Decision):
            return found
        return Decision(True, rule, () if found is None else (found,))

    def admit_in_memory(self, scope: Scope) -> list[tuple[bytes, bytes]] | Decision | None:
        """The middleware's ``check_in_memory``: an admission is its two response headers
        (no decision object); a refusal is its ``Decision``; None: counters elsewhere."""
        if self.counters is None:
            return None
        rule, found = self._in_memory(scope)
        if rule is None:
            return None
        if isinstance(found, Decision):
            return found
        return response_headers(rule, found)

    def _in_memory(self, scope: Scope) -> tuple[LimitSetRule | None, LimitState | Decision | None]:
        """The decision on this process's counters; no rule when the caller's limits are
        exact ones on shared counters (``check`` spends those)."""
        rule, identity = self.rule_for(scope)
        if rule.exact and self.synced is not None:
            return None, None
        self.decisions[rule.label] += 1
        found = self._check_memory_sliding(rule, identity)
        if isinstance(found, Decision):
            self.rejections[rule.label] += 1
        return rule, found

    async def check(self, scope: Scope) -> Decision:
        """Spend one request of every limit of the caller's set, within the time budget."""
        found = self.check_in_memory(scope)
        if found is not None:
            return found
        rule, identity = self.rule_for(scope)
        self.decisions[rule.label] += 1
        try:
            if self.shared:
                async with asyncio.timeout(self.timeout_s):
                    decision = await self._check(rule, identity)
            else:  # in-process memory never waits: no timer per request
                decision = await self._check(rule, identity)
        except Exception as exc:  # storage down, too slow, or broken: never a 500 from here
            self._storage_failed(rule, exc)
            return Decision(self.config.fail_open, rule, storage_failed=True)
        if not decision.allowed:
            self.rejections[rule.label] += 1
        return decision

    async def _check(self, rule: LimitSetRule, identity: str) -> Decision:
        ids = (self.config.namespace, rule.bucket, identity)
        for limit in rule.limits:
            if not await self.strategy.hit(limit.item, *ids, limit.name):
                retry = await self._retry_after(limit, ids)
                state = LimitState(limit, 0, retry)
                return Decision(False, rule, (state,), violated=state)
        if self.shared and len(rule.limits) > 1:  # overlap the Redis round trips
            stats = await asyncio.gather(
                *(self.strategy.get_window_stats(lim.item, *ids, lim.name) for lim in rule.limits)
            )
        else:  # one limit, or memory: a task per limit would cost more than the lookups
            stats = [
                await self.strategy.get_window_stats(lim.item, *ids, lim.name)
                for lim in rule.limits
            ]
        now = time.time()
        states = tuple(
            LimitState(lim, max(0, int(s.remaining)), max(0, math.ceil(s.reset_time - now)))
            for lim, s in zip(rule.limits, stats, strict=True)
        )
        return Decision(True, rule, states)

    def _check_memory_sliding(
        self, rule: LimitSetRule, identity: str
    ) -> LimitState | Decision | None:
        """``_check`` on this process's own sliding-window counters: no await, no task.

        The same arithmetic as limits' sliding-window counter (see ``sliding_window.py``);
        remaining and reset come from the counts the check saw, and a refusal's Retry-After
        from ``_sliding_retry_after``. Admitted: the most constrained limit's state (as
        ``most_constrained`` picks it; None for an empty set); refused: the decision.
        """
        counters = self.counters
        assert counters is not None
        # the key of limits' ids (namespace, bucket, identity, limit name) joined by \x1f
        prefix = self._key_bases.get(rule.bucket)
        if prefix is None:
            prefix = self._key_bases[rule.bucket] = f"{self.config.namespace}\x1f{rule.bucket}\x1f"
        prefix += identity + "\x1f"
        best: LimitState | None = None  # the most constrained: fewest left, then latest reset
        now = time.time()
        synced = self.synced
        for limit in rule.limits:
            quota, window = limit.quota, limit.window_s
            key = prefix + limit.name
            admitted, prev, cur, left = counters.hit(key, quota, window, now)
            if synced is not None:
                synced.note(key, window, now, admitted)
            prev_ttl = left if prev else 0.0
            if not admitted:
                wait = _sliding_retry_after(quota, window, prev, prev_ttl, cur, left + window)
                state = LimitState(limit, 0, _whole_seconds(wait))
                return Decision(False, rule, (state,), violated=state)
            remaining = max(0, quota - math.floor(prev * prev_ttl / window + cur))
            reset_in = left
            if prev:
                reset_in = min(reset_in, prev_ttl % (window / prev))
            reset_s = max(0, math.ceil(reset_in))
            if (
                best is None
                or remaining < best.remaining
                or (remaining == best.remaining and reset_s > best.reset_s)
            ):
                best = LimitState(limit, remaining, reset_s)
        return best

    async def remaining(self, limit: Limit, namespace: str, bucket: str, identity: str) -> int:
        """Requests one limit still admits for a caller, without spending one."""
        ids = (namespace, bucket, identity, limit.name)
        if self.counters is not None:
            return self.counters.remaining("\x1f".join(ids), limit.quota, limit.window_s)
        stats = await self.strategy.get_window_stats(limit.item, *ids)
        return max(0, int(stats.remaining))

    async def _retry_after(self, limit: Limit, ids: tuple[str, ...]) -> int:
        """Whole seconds until this limit admits the caller again, rounded up, at least 1."""
        if self.config.strategy == "sliding-window-counter":
            storage = cast(SlidingWindowCounterSupport, self.store.storage)
            prev, prev_ttl, cur, cur_ttl = await storage.get_sliding_window(
                limit.item.key_for(*ids, limit.name), limit.window_s
            )
            wait = _sliding_retry_after(
                limit.quota, limit.window_s, int(prev), float(prev_ttl), int(cur), float(cur_ttl)
            )
        else:
            stats = await self.strategy.get_window_stats(limit.item, *ids, limit.name)
            wait = stats.reset_time - time.time()
        return _whole_seconds(wait)

    def _sync_failed(self, exc: BaseException) -> None:
        """A sync of the shared counters failed: each process limits alone until one passes."""
        self.storage_errors["synced"] += 1
        self._warn(exc, "each process limits alone until Redis answers")

    def _storage_failed(self, rule: LimitSetRule, exc: BaseException) -> None:
        self.storage_errors[rule.label] += 1
        mode = "open: requests pass unlimited" if self.config.fail_open else "closed: 503"
        self._warn(exc, "failing " + mode)

    def _warn(self, exc: BaseException, outcome: str) -> None:
        now = time.monotonic()
        if now - self._last_warning < self.config.error_log_interval_s:
            self._suppressed += 1
            return
        what = (
            f"no answer within {self.config.storage_timeout_ms:g} ms"
            if isinstance(exc, TimeoutError)
            else f"{type(exc).__name__}: {exc}"
        )
        if self._suppressed:
            what += f"; {self._suppressed} more failure(s) since the last warning"
        log.warning("rate-limit storage failed (%s); %s", what, outcome)
        self._last_warning, self._suppressed = now, 0

    # ---- lifecycle and metrics

    def stats(self) -> dict[str, Any]:
        """A snapshot for the metrics policy: counters by limit-set label, and the mode."""
        return {
            "decisions": dict(self.decisions),
            "rejections": dict(self.rejections),
            "storage_errors": dict(self.storage_errors),
            "strategy": self.config.strategy,
            "shared": self.shared,
            "fail_open": self.config.fail_open,
            "counter_keys": len(self.counters) if self.counters is not None else None,
            "counters_evicted": self.counters.evicted if self.counters is not None else 0,
        }

    async def start(self) -> bool:
        """Probe the storage once at startup so a misconfigured Redis shows in the log at once.

        Never raises: the gateway still starts and each request then fails open or closed.
        """
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0)):
                if await self.store.storage.check():
                    return True
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            log.warning("rate-limit storage unreachable at startup (%s)", what)
            return False
        log.warning("rate-limit storage unreachable at startup")
        return False

    async def close(self) -> None:
        """Push the last synced hits and release the Redis pool (from the app's lifespan)."""
        if self.synced is not None:
            await self.synced.close()
        await self.store.close()


# --------------------------------------------------------------------------- headers


def policy_header(limits: Sequence[Limit]) -> bytes:
    """``"burst";q=10;w=1, "sustained";q=60;w=60``."""
    return ", ".join(f'"{lim.name}";q={lim.quota};w={lim.window_s}' for lim in limits).encode()


def most_constrained(states: Sequence[LimitState]) -> LimitState:
    """The limit with the fewest requests left; on a tie, the one that resets last."""
    return min(states, key=lambda s: (s.remaining, -s.reset_s))


def response_headers(rule: LimitSetRule, state: LimitState | None) -> list[tuple[bytes, bytes]]:
    """``RateLimit-Policy`` of the caller's limits, and ``RateLimit`` of the most constrained
    one when its state is known."""
    if state is None:
        return [(b"ratelimit-policy", rule.policy)]
    return [(b"ratelimit-policy", rule.policy), (b"ratelimit", ratelimit_header(state))]


def ratelimit_header(state: LimitState) -> bytes:
    """``"sustained";r=42;t=17``."""
    return f'"{state.limit.name}";r={state.remaining};t={state.reset_s}'.encode()


# --------------------------------------------------------------------------- middleware


class RateLimitMiddleware:
    """Pure ASGI: place it after authentication (it reads the principal) and before routing."""

    def __init__(self, app: ASGIApp, policy: RateLimitPolicy) -> None:
        self.app = app
        self.policy = policy

    def stats(self) -> dict[str, Any]:
        return self.policy.stats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, so servers given this middleware as their app detect ASGI 3;
        # with this process's counters the check itself needs no await.
        policy = self.policy
        if scope["type"] != "http" or not policy.config.enabled or policy.is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        found = policy.admit_in_memory(scope)
        if found is None:  # counters elsewhere (Redis): the awaited, time-boxed check
            await self._apply(await policy.check(scope), scope, receive, send)
        elif isinstance(found, Decision):  # refused
            await self._apply(found, scope, receive, send)
        else:  # admitted: its two headers
            await self._admitted(found, scope, receive, send)

    def _apply(
        self, decision: Decision, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        """The answer to a decision: the app's (or the refusal's) awaitable, not a frame."""
        states = decision.states
        state = (states[0] if len(states) == 1 else most_constrained(states)) if states else None
        headers = response_headers(decision.rule, state)

        if decision.violated is not None:
            return self._reject(scope, receive, send, decision.violated, decision.rule, headers)
        if not decision.allowed:  # storage failed and the policy fails closed
            response = problem_response(
                503,
                scope=scope,
                problem="rate-limit-unavailable",
                detail="The rate-limit store cannot be reached; try again shortly.",
                headers={"Retry-After": "1"},
            )
            return response(scope, receive, send)
        return self._admitted(headers, scope, receive, send)

    def _admitted(
        self, headers: list[tuple[bytes, bytes]], scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        """The app, its response carrying ``headers``."""
        added = scope.get(RESPONSE_HEADERS_KEY)
        if added is not None:  # the request envelope adds them to the response
            added += headers
            return self.app(scope, receive, send)
        return self._with_headers(headers, scope, receive, send)

    async def _with_headers(
        self, headers: list[tuple[bytes, bytes]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _reject(
        scope: Scope,
        receive: Receive,
        send: Send,
        violated: LimitState,
        rule: LimitSetRule,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        limit = violated.limit
        who = "address" if rule.label.startswith(UNAUTHENTICATED) else "client"
        response = problem_response(
            429,
            scope=scope,
            problem="rate-limited",
            detail=(
                f"Rate limit {limit.name!r} ({limit.quota} per {limit.window_s} s) exceeded "
                f"for this {who}; retry after {violated.reset_s} s."
            ),
            headers={"Retry-After": str(violated.reset_s)},
            extra={
                "policy": limit.name,
                "quota": limit.quota,
                "window_s": limit.window_s,
                "retry_after_s": violated.reset_s,
            },
        )
        response.raw_headers.extend(headers)
        await response(scope, receive, send)
