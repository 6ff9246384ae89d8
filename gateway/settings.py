"""Configuration: YAML files in one directory, loaded into pydantic models.

One file per section (``gateway.yaml`` -> ``gateway``, ``backends.yaml`` -> ``backends``...).
Strings may read the environment with ``${VAR}`` (unset is an error) or ``${VAR:-default}``;
``TRELLIS_SECTION__KEY__SUBKEY=value`` overrides any key (``gateway.config_env``), and
``TRELLIS_REDIS_URL`` switches every shared store to Redis. Loading reports every problem in one
pass, each with its file and key path, or with the variable that supplied the wrong value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experience_apis.config import ExperienceConfig
from gateway.config_env import (
    EnvironmentOverrides,
    KeyPath,
    dotted,
    file_path,
    has_path,
    read_environment,
)
from gateway.events.config import EventsConfig
from gateway.gc_tuning import GcSettings
from gateway.oauth.config import ClientConfig, OAuthConfig
from gateway.observability import ObservabilityConfig
from gateway.operations import OperationsConfig
from gateway.policies.admission import AdmissionConfig
from gateway.policies.edge import EdgeConfig
from gateway.policies.ratelimit import RateLimitConfig
from gateway.server.config import ServerLimits
from gateway.stores.redis_options import DEFAULT_PREFIX
from system_apis.config import BackendConfig, sandbox_ports
from system_apis.connectors import ConnectorError, UnknownConnector, connectors
from system_apis.registry import role_instances
from system_apis.roles import ROLE_NAMES
from system_apis.sandbox.faults import Faults

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SECTIONS: tuple[str, ...] = (
    "gateway",
    "backends",
    "roles",
    "oauth",
    "clients",
    "ratelimit",
    "observability",
    "experience",
    "events",
)
KNOWN_SCOPES: frozenset[str] = frozenset(
    {
        "admin",
        "system:read",
        "system:write",
        "process:read",
        "process:write",
        "experience:web",
        "experience:mobile",
        "experience:support",
        "partner",
    }
)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SandboxSettings(Strict):
    enabled: bool = Field(True, description="`trellis run` starts the sandbox backends.")
    host: str = "127.0.0.1"
    base_port: int = Field(9101, ge=1024, le=65000)
    faults: dict[str, Faults] = Field(
        default_factory=dict,
        description="Faults injected from the start, per backend (also settable at run time "
        "with POST /__faults on each sandbox backend).",
    )


class ReadinessSettings(Strict):
    required_backends: list[str] = Field(
        default_factory=list,
        description="Backends that must answer for /readyz to be 200, besides the critical "
        "ones (critical: true in backends.yaml); a non-critical backend down only degrades.",
    )
    probe_timeout_s: float = Field(1.0, gt=0)


class ViewSettings(Strict):
    """Composed views (the customer 360, a ticket's context): process_apis/deadline.py."""

    deadline_s: float = Field(
        5.0, gt=0, description="The whole view, its record of truth included; then 504."
    )
    section_timeout_s: float = Field(
        3.0, gt=0, description="One non-critical section; then it is reported unavailable."
    )


class GatewaySettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
        description="The gateway's base URL as clients reach it (behind a proxy, or bound to "
        "a wildcard address); default http://host:port. The OAuth issuer defaults to it.",
    )
    workers: int = Field(1, ge=1, le=64)
    redis_url: str | None = Field(None, description="Set it to share every store via Redis.")
    redis_prefix: str = Field(
        DEFAULT_PREFIX,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Every Redis key the gateway writes starts with it: give deployments that "
        "share one Redis database different prefixes.",
    )
    database_url: str | None = Field(
        None,
        pattern=r"^postgres(ql)?://",
        description="postgresql://...: every durable record (idempotency keys, cross-references, "
        "the outbox and event log, revocations, dead letters) in PostgreSQL, for several hosts.",
    )
    data_dir: Path = Field(Path("var"), description="Embedded stores (SQLite) live here.")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    views: ViewSettings = Field(default_factory=ViewSettings)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    gc: GcSettings = Field(default_factory=GcSettings)
    admission: AdmissionConfig = Field(
        default_factory=AdmissionConfig,
        description="Per-worker limit of requests in progress (policies/admission.py).",
    )
    server: ServerLimits = Field(default_factory=ServerLimits)
    operations: OperationsConfig = Field(
        default_factory=OperationsConfig,
        description="Durable multi-step operations: leases, the sweeper, undo retries.",
    )


class Settings(BaseModel):
    """The whole configuration. Build it with ``load_settings``; it never reads files itself.

    The loader also checks the names sections share (backends, scopes), so that a type error
    elsewhere does not hide them: ``_reference_problems``.
    """

    model_config = ConfigDict(extra="forbid")

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    backends: dict[str, BackendConfig]
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="The instance serving each role; default: the one instance playing it.",
    )
    oauth: OAuthConfig = Field(default_factory=OAuthConfig)
    clients: dict[str, ClientConfig] = Field(default_factory=dict)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    experience: ExperienceConfig = Field(default_factory=ExperienceConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)

    @model_validator(mode="after")
    def _keys_in_data_dir(self) -> Settings:
        """Unset, ``oauth.keys_dir`` is ``<gateway.data_dir>/keys``: the data dir holds every
        file the gateway writes."""
        if "keys_dir" not in self.oauth.model_fields_set:
            keys_dir = Path(self.gateway.data_dir) / "keys"
            self.oauth = self.oauth.model_copy(update={"keys_dir": keys_dir})
        return self

    def sandbox_ports(self) -> dict[str, int]:
        """Every instance's sandbox port (``system_apis.config.sandbox_ports``)."""
        fixed = {name: cfg.sandbox_port for name, cfg in self.backends.items()}
        return sandbox_ports(self.gateway.sandbox.base_port, self.backends, fixed)

    def sandbox_url(self, backend: str) -> str:
        return f"http://{self.gateway.sandbox.host}:{self.sandbox_ports()[backend]}"

    def role_instances(self) -> dict[str, str]:
        """Which instance serves each role."""
        return role_instances(self.backends, self.roles)

    def backend_url(self, backend: str) -> str:
        cfg = self.backends[backend]
        if cfg.sandbox:
            return self.sandbox_url(backend)
        return str(cfg.base_url).rstrip("/")

    @property
    def uses_sandbox(self) -> bool:
        return any(cfg.sandbox for cfg in self.backends.values())

    @property
    def shared_stores(self) -> bool:
        return bool(self.gateway.redis_url)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem, with file and key."""

    def __init__(self, problems: list[str], warnings: Sequence[str] = ()) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = list(warnings)


@dataclass(frozen=True)
class ConfigReport:
    """What loading found: the settings (None unless valid), every problem, every warning."""

    settings: Settings | None
    problems: list[str]
    warnings: list[str]


@dataclass(frozen=True)
class _Problem:
    path: KeyPath  # section first, then the keys in its file
    message: str


@dataclass(frozen=True)
class _Default:
    path: KeyPath
    variables: tuple[str, ...]  # the unset variables whose default the value took


SECRET_KEYS = frozenset({"secret", "client_secret", "key", "password", "token"})
"""Keys whose value is a credential: one may fall back to a default written in the
repository only where that default is the sandbox's own credential (``_repository_secrets``)."""


@dataclass
class ConfigFiles:
    """The sections read from the YAML files, with what reading them found."""

    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # about a whole file
    unset: list[_Problem] = field(default_factory=list)  # ${VAR} with VAR unset, by key path
    unreadable: set[str] = field(default_factory=set)  # sections whose file is not valid
    referenced: set[str] = field(default_factory=set)  # every VAR a ${VAR} names
    defaulted: list[_Default] = field(default_factory=list)  # ${VAR:-default} with VAR unset


def _interpolate(value: Any, where: KeyPath, files: ConfigFiles) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*where, str(k)), files) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*where, i), files) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        fell_back: list[str] = []

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            files.referenced.add(name)
            env = os.environ.get(name)
            if env is not None:
                return env
            if default is not None:
                fell_back.append(name)
                return default
            message = f"missing secret: environment variable {name} is not set"
            files.unset.append(_Problem(where, message))
            return ""

        result = _ENV_REF.sub(repl, value)
        if fell_back:
            files.defaulted.append(_Default(where, tuple(fell_back)))
        return result
    return value


def read_config_dir(config_dir: Path) -> ConfigFiles:
    """Raw sections from the YAML files, and the problems found reading them."""
    files = ConfigFiles()
    if not config_dir.is_dir():
        files.problems.append(f"{config_dir}: not a directory")
        files.unreadable.update(SECTIONS)
        return files
    for path in sorted(config_dir.iterdir()):
        if path.suffix not in (".yaml", ".yml"):
            continue
        rel = f"{config_dir.name}/{path.name}"
        if path.stem not in SECTIONS:
            files.problems.append(
                f"{rel}: unknown config file; expected one of "
                + ", ".join(f"{s}.yaml" for s in SECTIONS)
            )
            continue
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            files.problems.append(f"{rel}: not valid YAML{at}: {getattr(exc, 'problem', exc)}")
            files.unreadable.add(path.stem)
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            files.problems.append(
                f"{rel}: the top level must be a mapping, not {type(raw).__name__}"
            )
            files.unreadable.add(path.stem)
            continue
        files.data[path.stem] = _interpolate(raw, (path.stem,), files)
    if "backends" not in files.data and "backends" not in files.unreadable:
        files.problems.append(
            f"{config_dir.name}/backends.yaml: missing (every backend must be declared)"
        )
        files.unreadable.add("backends")
    return files


def _reference_problems(data: Mapping[str, Any]) -> list[_Problem]:
    """Names that must be known: connectors and roles, the instances other sections name,
    client scopes."""
    backends = data.get("backends")
    instances = list(backends) if isinstance(backends, dict) else []
    known = sorted(instances)
    out = _connector_problems(backends, data.get("roles")) if isinstance(backends, dict) else []
    gateway = data.get("gateway")
    sandbox = gateway.get("sandbox") if isinstance(gateway, dict) else None
    faults = sandbox.get("faults") if isinstance(sandbox, dict) else None
    for name in faults if isinstance(faults, dict) else ():
        if name not in instances:
            path: KeyPath = ("gateway", "sandbox", "faults", name)
            out.append(_Problem(path, f"unknown backend; known: {known}"))
    readiness = gateway.get("readiness") if isinstance(gateway, dict) else None
    required = readiness.get("required_backends") if isinstance(readiness, dict) else None
    for name in required if isinstance(required, list) else ():
        if name not in instances:
            path = ("gateway", "readiness", "required_backends")
            out.append(_Problem(path, f"unknown backend {name!r}; known: {known}"))
    clients = data.get("clients")
    for client_id, client in clients.items() if isinstance(clients, dict) else ():
        scopes = client.get("scopes") if isinstance(client, dict) else None
        for scope in scopes if isinstance(scopes, list) else ():
            if scope not in KNOWN_SCOPES:
                path = ("clients", client_id, "scopes")
                out.append(_Problem(path, f"unknown scope {scope!r}"))
    return out


def _connector_problems(backends: Mapping[str, Any], roles: Any) -> list[_Problem]:
    """Each instance's connector is installed and provides the role it plays; ``roles.yaml``
    names instances that play the role; every role the process layer needs is served."""
    try:
        installed = connectors()
    except ConnectorError as exc:
        return [_Problem(("backends",), str(exc))]
    out: list[_Problem] = []
    playing: dict[str, list[str]] = {}  # role -> the instances that play it
    provides: dict[str, tuple[str, ...]] = {}  # instance -> its connector's roles
    connector_of: dict[str, str] = {}
    for name, raw in backends.items():
        cfg = raw if isinstance(raw, dict) else {}
        connector = cfg.get("connector")
        if not isinstance(connector, str):
            out.append(
                _Problem(
                    ("backends", name, "connector"),
                    f"required: the connector this instance runs; installed: {list(installed)}",
                )
            )
            continue
        if connector not in installed:
            message = str(UnknownConnector(connector, list(installed)))
            out.append(_Problem(("backends", name, "connector"), message))
            continue
        provides[name] = installed[connector].roles
        connector_of[name] = connector
        role = cfg.get("role")
        if isinstance(role, str) and role not in provides[name]:
            message = (
                f"connector {connector!r} does not provide the role {role!r}; "
                f"it provides {list(provides[name])}"
            )
            out.append(_Problem(("backends", name, "role"), message))
            continue
        if cfg.get("sandbox") is True and installed[connector].sandbox is None:
            message = f"connector {connector!r} has no sandbox; give base_url instead"
            out.append(_Problem(("backends", name, "sandbox"), message))
        played = role if isinstance(role, str) else next(iter(provides[name]), None)
        if played is not None:
            playing.setdefault(played, []).append(name)
    chosen = roles if isinstance(roles, dict) else {}
    for role, instance in chosen.items():
        if not isinstance(instance, str):
            continue  # the model says what is wrong with it
        if instance not in backends:
            message = f"unknown instance {instance!r}; instances: {sorted(backends)}"
            out.append(_Problem(("roles", role), message))
        elif instance in provides and role not in provides[instance]:
            message = (
                f"instance {instance!r} runs the connector {connector_of[instance]!r}, which "
                f"does not provide the role {role!r}; it provides {list(provides[instance])}"
            )
            out.append(_Problem(("roles", role), message))
    if out:  # a role left unserved by a broken instance is that instance's problem
        return out
    for role in ROLE_NAMES:
        names = playing.get(role, [])
        if role in chosen:
            continue
        if not names:
            message = (
                f"no instance serves the role {role!r}: add an instance whose connector "
                "provides it to backends.yaml, or name the instance here"
            )
            out.append(_Problem(("roles", role), message))
        elif len(names) > 1:
            message = f"instances {names} all play the role {role!r}: name the one to use"
            out.append(_Problem(("roles", role), message))
    return out


def _repository_secrets(
    data: Mapping[str, Any], defaulted: Sequence[_Default], given: Mapping[str, Any]
) -> list[_Problem]:
    """Credentials that took the default written in the config files outside sandbox mode.

    The shipped files default every credential to the sandbox's own (``${VAR:-sandbox value}``)
    so that ``make run`` works with nothing set. That default is sandbox-only: under a backend
    whose ``sandbox`` is not true, or an inbound webhook not named after a sandbox backend, the
    variable must be set, or anyone who read the repository holds the credential.
    """
    backends = data.get("backends")
    backends = backends if isinstance(backends, dict) else {}

    def sandbox(name: Any) -> bool:
        cfg = backends.get(name)
        return isinstance(cfg, dict) and cfg.get("sandbox") is True

    out: list[_Problem] = []
    for found in defaulted:
        path = found.path
        if not path or str(path[-1]) not in SECRET_KEYS or has_path(given, path):
            continue  # not a credential, or an override (option or variable) gave it
        if path[0] == "backends" and len(path) > 1 and sandbox(path[1]):
            continue
        if path[:2] == ("events", "inbound_webhooks") and len(path) > 2 and sandbox(path[2]):
            continue
        names = ", ".join(found.variables)
        out.append(
            _Problem(
                path,
                f"environment variable {names} is not set, and the default written in the "
                "config file is the sandbox's credential: outside sandbox mode set "
                f"{names}",
            )
        )
    return out


def _validation_problems(
    data: Mapping[str, Any], config_dir: Path | None = None
) -> tuple[Settings | None, list[_Problem]]:
    data, problems = _by_connector_schema(data, config_dir)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += _problems_of(exc, ())
        return None, problems
    return (None if problems else settings), problems


def _problems_of(exc: ValidationError, prefix: KeyPath) -> list[_Problem]:
    problems = []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        problems.append(_Problem(file_path(Settings, (*prefix, *err["loc"])), message))
    return problems


def _by_connector_schema(
    data: Mapping[str, Any], config_dir: Path | None = None
) -> tuple[dict[str, Any], list[_Problem]]:
    """Instances whose connector has its own config schema, validated by it (a file it names,
    such as a ``rest`` instance's fixture, is read from ``config_dir``)."""
    out = dict(data)
    backends = data.get("backends")
    try:
        installed = connectors()
    except ConnectorError:
        return out, []  # said by _reference_problems
    if not isinstance(backends, dict):
        return out, []
    validated: dict[str, Any] = dict(backends)
    problems: list[_Problem] = []
    for name, raw in backends.items():
        named = raw.get("connector") if isinstance(raw, dict) else None
        connector = installed.get(named) if isinstance(named, str) else None
        if connector is None or connector.config_schema is BackendConfig:
            continue
        try:
            context = {"config_dir": config_dir} if config_dir is not None else None
            validated[name] = connector.config_schema.model_validate(raw, context=context)
        except ValidationError as exc:
            problems += _problems_of(exc, ("backends", name))
            # a stand-in that passes every check: the problems above are the whole story
            validated[name] = BackendConfig.model_construct(sandbox=True)
    out["backends"] = validated
    return out, problems


def _under(path: KeyPath, parents: Sequence[KeyPath]) -> bool:
    return any(path[: len(parent)] == parent for parent in parents)


def _describe(
    problem: _Problem, directory: Path, env: EnvironmentOverrides, files: Mapping[str, Any]
) -> str:
    """``file: key: message``, or ``environment VAR: section.key: message`` for an override.

    ``files`` is the data before the environment: a key only variables create is theirs.
    """
    involved = env.beneath(problem.path) if problem.path else []
    override = env.origin(problem.path)
    if override is None and involved and not has_path(files, problem.path):
        variables = ", ".join(involved)
        return f"environment {variables}: {dotted(problem.path)}: {problem.message}"
    if override is not None:
        return f"environment {override.variable}: {dotted(problem.path)}: {problem.message}"
    section = str(problem.path[0]) if problem.path else ""
    where = f"{directory.name}/{section}.yaml" if section in SECTIONS else directory.name
    line = f"{where}: {dotted(problem.path[1:]) or '(top level)'}: {problem.message}"
    if involved:
        line += f" (with environment {', '.join(involved)})"
    return line


def default_config_dir() -> Path:
    """./config when run from a checkout or a deployment folder, else the one shipped here."""
    local = Path.cwd() / "config"
    return local if (local / "backends.yaml").is_file() else DEFAULT_CONFIG_DIR


def inspect_config(config_dir: Path | str | None = None, **overrides: Any) -> ConfigReport:
    """Read, override and validate, collecting every problem instead of stopping at the first.

    Layers, each over the one before: the YAML files, ``overrides`` (command-line options),
    ``TRELLIS_REDIS_URL`` and ``TRELLIS_DATABASE_URL``, then ``TRELLIS_<SECTION>__<KEY>``
    variables. A problem names the variable when a variable supplied the value, else the file
    and key path.
    """
    directory = Path(config_dir or os.environ.get("TRELLIS_CONFIG_DIR") or default_config_dir())
    files = read_config_dir(directory)
    data = files.data
    given: dict[str, Any] = {}  # what options and variables set, over the files
    for section, value in overrides.items():
        data[section] = _deep_merge(data.get(section, {}), value)
        given[section] = value
    if redis := os.environ.get("TRELLIS_REDIS_URL"):
        data.setdefault("gateway", {})["redis_url"] = redis
    if database := os.environ.get("TRELLIS_DATABASE_URL"):
        data.setdefault("gateway", {})["database_url"] = database
    env = read_environment(Settings, os.environ, files.referenced)
    before_env = data
    data = _deep_merge(data, env.layer())

    unset = [p for p in files.unset if env.origin(p.path) is None]
    blank = [p.path for p in unset]  # a value left empty: its own problem says why
    settings, invalid = _validation_problems(data, directory)
    found = [
        p
        for p in invalid
        + _reference_problems(data)
        + _repository_secrets(data, files.defaulted, _deep_merge(given, env.layer()))
        if env.origin(p.path) is not None
        or not (_under(p.path, blank) or (p.path and p.path[0] in files.unreadable))
    ]
    problems = [
        *files.problems,
        *(_describe(p, directory, env, before_env) for p in unset),
        *(f"environment {b.variable}: {dotted(b.path)}: {b.message}" for b in env.bad),
        *(_describe(p, directory, env, before_env) for p in found),
    ]
    warnings = list(env.warnings)
    if settings is not None:  # valid, but weakened on purpose: said at every start
        warnings += [
            f"backends.{name}.tls.verify is false: its certificate is not checked, anyone on "
            "the path can read and change its traffic"
            for name, cfg in settings.backends.items()
            if cfg.tls is not None and not cfg.tls.verify
        ]
    return ConfigReport(None if problems else settings, problems, warnings)


def load_settings(config_dir: Path | str | None = None, **overrides: Any) -> Settings:
    """Load and validate; raise ``ConfigError`` listing every problem with its file and key."""
    report = inspect_config(config_dir, **overrides)
    if report.settings is None:
        raise ConfigError(report.problems, report.warnings)
    return report.settings


def _deep_merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            out[k] = _deep_merge(base.get(k), v)
        return out
    return extra
