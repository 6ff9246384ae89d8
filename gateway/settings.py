"""Configuration: YAML files in one directory, loaded into pydantic-settings models.

One file per section (``gateway.yaml`` -> ``gateway``, ``backends.yaml`` -> ``backends``...).
Strings may read the environment with ``${VAR}`` (unset is an error) or ``${VAR:-default}``;
``TRELLIS_SECTION__KEY__SUBKEY=value`` overrides any key, and ``TRELLIS_REDIS_URL`` switches every
shared store to Redis. Every problem is reported with its file and key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from experience_apis.config import ExperienceConfig
from gateway.events.config import EventsConfig
from gateway.gc_tuning import GcSettings
from gateway.oauth.config import ClientConfig, OAuthConfig
from gateway.observability import ObservabilityConfig
from gateway.policies.edge import EdgeConfig
from gateway.policies.ratelimit import RateLimitConfig
from gateway.stores.redis_options import DEFAULT_PREFIX
from system_apis.config import BACKEND_NAMES, BackendConfig
from system_apis.sandbox.faults import Faults

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SECTIONS: tuple[str, ...] = (
    "gateway",
    "backends",
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
    required_backends: list[str] | None = Field(
        None, description="Backends that must answer for /readyz to be 200; default all."
    )
    probe_timeout_s: float = Field(1.0, gt=0)


class GatewaySettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    redis_url: str | None = Field(None, description="Set it to share every store via Redis.")
    redis_prefix: str = Field(
        DEFAULT_PREFIX,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Every Redis key the gateway writes starts with it: give deployments that "
        "share one Redis database different prefixes.",
    )
    data_dir: Path = Field(Path("var"), description="Embedded stores (SQLite) live here.")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    edge: EdgeConfig = Field(default_factory=EdgeConfig)
    gc: GcSettings = Field(default_factory=GcSettings)


class Settings(BaseSettings):
    """The whole configuration. Build it with ``load_settings``; it never reads files itself."""

    model_config = SettingsConfigDict(
        env_prefix="TRELLIS_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    backends: dict[str, BackendConfig]
    oauth: OAuthConfig = Field(default_factory=OAuthConfig)
    clients: dict[str, ClientConfig] = Field(default_factory=dict)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    experience: ExperienceConfig = Field(default_factory=ExperienceConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # environment wins over the YAML files

    @model_validator(mode="after")
    def _references(self) -> Settings:
        problems = []
        unknown = sorted(set(self.backends) - set(BACKEND_NAMES))
        missing = sorted(set(BACKEND_NAMES) - set(self.backends))
        if unknown:
            problems.append(f"unknown backend(s) {unknown}; known: {list(BACKEND_NAMES)}")
        if missing:
            problems.append(f"backend(s) {missing} are not configured")
        for name in self.gateway.sandbox.faults:
            if name not in BACKEND_NAMES:
                problems.append(f"gateway.sandbox.faults names unknown backend {name!r}")
        required = self.gateway.readiness.required_backends or []
        for name in required:
            if name not in BACKEND_NAMES:
                problems.append(
                    f"gateway.readiness.required_backends names unknown backend {name!r}"
                )
        for client_id, client in self.clients.items():
            for scope in client.scopes:
                if scope not in KNOWN_SCOPES:
                    problems.append(f"clients.{client_id}.scopes: unknown scope {scope!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def sandbox_url(self, backend: str) -> str:
        sb = self.gateway.sandbox
        return f"http://{sb.host}:{sb.base_port + BACKEND_NAMES.index(backend)}"

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

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _interpolate(value: Any, where: str, problems: list[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{where}.{k}" if where else str(k), problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            env = os.environ.get(name)
            if env is not None:
                return env
            if default is not None:
                return default
            problems.append(f"{where}: missing secret: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(repl, value)
    return value


def read_config_dir(config_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Raw sections from the YAML files, and the problems found reading them."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    if not config_dir.is_dir():
        return data, [f"{config_dir}: not a directory"]
    for path in sorted(config_dir.iterdir()):
        if path.suffix not in (".yaml", ".yml"):
            continue
        rel = f"{config_dir.name}/{path.name}"
        if path.stem not in SECTIONS:
            problems.append(
                f"{rel}: unknown config file; expected one of "
                + ", ".join(f"{s}.yaml" for s in SECTIONS)
            )
            continue
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problems.append(f"{rel}: not valid YAML{at}: {getattr(exc, 'problem', exc)}")
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(f"{rel}: the top level must be a mapping, not {type(raw).__name__}")
            continue
        section_problems: list[str] = []
        data[path.stem] = _interpolate(raw, "", section_problems)
        problems.extend(f"{rel}: {p}" for p in section_problems)
    if "backends" not in data:
        problems.append(
            f"{config_dir.name}/backends.yaml: missing (every backend must be declared)"
        )
    return data, problems


def _describe(err: Mapping[str, Any], config_dir: Path) -> str:
    loc = [str(p) for p in err["loc"]]
    section = loc[0] if loc else ""
    # discriminated unions add the tag as a path element; drop it so the path is the YAML's
    keys = [p for p in loc[1:] if p not in ("oauth_client_credentials", "api_key", "basic", "none")]
    where = f"{config_dir.name}/{section}.yaml" if section in SECTIONS else config_dir.name
    key = ".".join(keys) or "(top level)"
    env = "TRELLIS_" + "__".join([section, *keys]).upper()
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{where}: {key}: {msg} (or environment {env})"


def default_config_dir() -> Path:
    """./config when run from a checkout or a deployment folder, else the one shipped here."""
    local = Path.cwd() / "config"
    return local if (local / "backends.yaml").is_file() else DEFAULT_CONFIG_DIR


def load_settings(config_dir: Path | str | None = None, **overrides: Any) -> Settings:
    """Load and validate; raise ``ConfigError`` listing every problem with its file and key."""
    directory = Path(config_dir or os.environ.get("TRELLIS_CONFIG_DIR") or default_config_dir())
    data, problems = read_config_dir(directory)
    for section, value in overrides.items():
        data[section] = _deep_merge(data.get(section, {}), value)
    if redis := os.environ.get("TRELLIS_REDIS_URL"):
        data.setdefault("gateway", {})["redis_url"] = redis
    if problems:
        raise ConfigError(problems)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError([_describe(e, directory) for e in exc.errors()]) from None


def _deep_merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            out[k] = _deep_merge(base.get(k), v)
        return out
    return extra
