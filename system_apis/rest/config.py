"""What a ``rest`` instance declares in ``backends.yaml``: its resources and output models.

Besides every backend's blocks (base URL, auth, timeouts, retry, breaker, limits), an instance
lists ``resources`` (where each lives, how it pages, which filters pass through, which model it
maps to) and ``models`` (named output shapes: each field's type, whether it is required, and the
JMESPath expression that reads it from the vendor's record). Everything is checked when the
configuration loads, each problem with its key path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from ..config import BackendConfig, Strict

SCALAR_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean", "datetime", "date")
"""The field types a model may use, besides another model of the same file and lists."""

NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
"""A model or output field name: it becomes a schema and property name in OpenAPI."""
RESOURCE_NAME = r"^[a-z][a-z0-9-]{0,63}$"
"""A resource name: a path segment of /system/v1/{instance}/{resource}."""

_LIST = re.compile(r"^list\[(.+)\]$")


def check_expression(value: str) -> str:
    """A JMESPath expression that compiles, else the parser's reason."""
    try:
        jmespath.compile(value)
    except JMESPathError as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"not a JMESPath expression: {reason}") from None
    return value


def element_type(type_: str) -> tuple[str, bool]:
    """``("Event", True)`` for ``list[Event]``, ``("string", False)`` for ``string``."""
    match = _LIST.match(type_)
    return (match.group(1).strip(), True) if match else (type_, False)


class FieldSpec(Strict):
    """One output field: where it is in the vendor's record and what it must be."""

    type: str = Field(
        "string",
        description="string, integer, number, boolean, datetime, date, the name of another "
        "model, or list[...] of any of these.",
    )
    path: str | None = Field(
        None, description="JMESPath into the vendor's record; default: the field's own name."
    )
    required: bool = Field(False, description="A record without it is bad data (502).")
    description: str = ""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)


class ModelSpec(Strict):
    """A named output model: its fields in the order they are written."""

    description: str = ""
    fields: dict[str, FieldSpec] = Field(min_length=1)

    @field_validator("fields")
    @classmethod
    def _names(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name in fields:
            if not re.match(NAME, name):
                raise ValueError(f"field name {name!r} must match {NAME}")
        return fields


class FilterSpec(Strict):
    """A query parameter passed through to the vendor, checked first."""

    param: str | None = Field(None, description="The vendor's name for it; default: the same.")
    description: str = ""
    max_length: int = Field(200, ge=1, le=2000)
    pattern: str | None = Field(None, description="A regular expression the value must match.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value, re.ASCII)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


Operation = Literal["list", "get"]
OPERATIONS: tuple[Operation, ...] = ("list", "get")

PagingStyle = Literal["cursor", "page", "offset", "link", "next_url", "none"]


class PagingSpec(Strict):
    """How the vendor splits a list into pages, and how big a page may be."""

    style: PagingStyle = Field(
        "none",
        description="cursor: a token in the body, sent back as cursor_param; page: page "
        "numbers in page_param; offset: a record offset in offset_param; link: the RFC 8288 "
        "Link header's rel=next URL; next_url: the next page's URL in the body; none: one page.",
    )
    limit_param: str | None = Field("limit", description="The page size parameter, if any.")
    default_limit: int = Field(50, ge=1, le=1000)
    max_limit: int = Field(100, ge=1, le=1000, description="The vendor's largest page.")
    cursor_param: str = "cursor"
    page_param: str = "page"
    first_page: int = Field(1, ge=0, le=1)
    offset_param: str = "offset"
    next_field: str | None = Field(
        None,
        description="JMESPath to the next cursor (cursor) or next URL (next_url) in the body; "
        "null or absent on the last page.",
    )
    has_more_field: str | None = Field(
        None,
        description="page/offset: JMESPath to a boolean saying whether more pages follow; "
        "without it a page shorter than the limit is the last.",
    )

    @field_validator("next_field", "has_more_field")
    @classmethod
    def _expressions(cls, value: str | None) -> str | None:
        return None if value is None else check_expression(value)

    @model_validator(mode="after")
    def _complete(self) -> PagingSpec:
        if self.style in ("cursor", "next_url") and self.next_field is None:
            raise ValueError(f"paging style {self.style} needs next_field")
        if self.default_limit > self.max_limit:
            raise ValueError("default_limit is larger than max_limit")
        return self


class ResourceSpec(Strict):
    """One collection of the vendor's API, served at /system/v1/{instance}/{resource}[/{id}]."""

    path: str = Field(pattern=r"^/[^?#{}]*$", description="The collection's path on base_url.")
    item_path: str | None = Field(
        None,
        pattern=r"^/[^?#]*\{id\}[^?#]*$",
        description="One record's path with {id}; default: path/{id}.",
    )
    model: str = Field(description="The output model (a name under models).")
    id_pattern: str = Field(
        description="The vendor's id syntax (a regular expression, ASCII): an id outside it "
        "is a 404 without a call."
    )
    id_field: str = Field(
        "id", description="JMESPath to the vendor's id in a record (the sandbox looks it up)."
    )
    items_path: str = Field("@", description="JMESPath to the list of records in a list response.")
    record_path: str = Field("@", description="JMESPath to the record in a single response.")
    paging: PagingSpec = Field(default_factory=PagingSpec)
    filters: dict[str, FilterSpec] = Field(default_factory=dict)
    operations: list[Operation] = Field(
        default_factory=lambda: list(OPERATIONS),
        min_length=1,
        description="list: GET /{resource}; get: GET /{resource}/{id}.",
    )
    description: str = ""

    @field_validator("id_field", "items_path", "record_path")
    @classmethod
    def _expressions(cls, value: str) -> str:
        return check_expression(value)

    @field_validator("id_pattern")
    @classmethod
    def _id_pattern(cls, value: str) -> str:
        try:
            re.compile(value, re.ASCII)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if re.fullmatch(value, "", re.ASCII) or re.fullmatch(value, "..", re.ASCII):
            raise ValueError("must not match an empty id or '..'")
        return value

    @field_validator("filters")
    @classmethod
    def _filter_names(cls, filters: dict[str, FilterSpec]) -> dict[str, FilterSpec]:
        reserved = {"cursor", "limit"}
        for name in filters:
            if not re.match(NAME, name) or name in reserved:
                raise ValueError(f"filter name {name!r} must match {NAME}, not cursor or limit")
        return filters

    @property
    def one_path(self) -> str:
        return self.item_path or f"{self.path.rstrip('/')}/{{id}}"


class RestBackendConfig(BackendConfig):
    """A ``rest`` instance: the blocks of every backend, its resources and models, and the
    fixture its sandbox serves."""

    resources: dict[str, ResourceSpec] = Field(min_length=1)
    models: dict[str, ModelSpec] = Field(min_length=1)
    fixture: Path | None = Field(
        None,
        description="YAML or JSON records per resource for the sandbox (sandbox: true); a "
        "relative path is read from the configuration directory.",
    )
    _fixture_records: dict[str, list[dict[str, Any]]] | None = PrivateAttr(None)

    @field_validator("resources")
    @classmethod
    def _resource_names(cls, resources: dict[str, ResourceSpec]) -> dict[str, ResourceSpec]:
        for name in resources:
            if not re.match(RESOURCE_NAME, name):
                raise ValueError(f"resource name {name!r} must match {RESOURCE_NAME}")
        return resources

    @field_validator("models")
    @classmethod
    def _model_names(cls, models: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for name, model in models.items():
            if not re.match(NAME, name):
                raise ValueError(f"model name {name!r} must match {NAME}")
            for field_name, spec in model.fields.items():
                inner, _ = element_type(spec.type)
                if inner not in SCALAR_TYPES and inner not in models:
                    raise ValueError(
                        f"{name}.fields.{field_name}.type: unknown type {spec.type!r}; use "
                        f"{', '.join(SCALAR_TYPES)}, a model ({', '.join(models)}) or list[...]"
                    )
        _no_cycles(models)
        return models

    @field_validator("fixture")
    @classmethod
    def _fixture_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = (info.context or {}).get("config_dir")
        path = value if value.is_absolute() or base is None else Path(base) / value
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @model_validator(mode="after")
    def _references(self) -> RestBackendConfig:
        for name, resource in self.resources.items():
            if resource.model not in self.models:
                raise ValueError(
                    f"resources.{name}.model: unknown model {resource.model!r}; "
                    f"models: {sorted(self.models)}"
                )
        if self.sandbox and self.fixture is None:
            raise ValueError("sandbox: true needs fixture: the records its sandbox serves")
        if self.fixture is not None:  # check-config explains a fixture the sandbox would refuse
            from .sandbox import FixtureError, load_fixture

            try:
                self._fixture_records = load_fixture(self.fixture, self)
            except FixtureError as exc:
                raise ValueError(f"fixture: {exc}") from None
        return self

    def fixture_records(self) -> dict[str, list[dict[str, Any]]] | None:
        """The fixture's records per resource, read and checked once as the config loaded
        (its sandbox serves them without reading the file again); None without a fixture."""
        return self._fixture_records


def _no_cycles(models: dict[str, ModelSpec]) -> None:
    """A model may hold another, never itself through others (its schema would never end)."""

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in trail:
            raise ValueError(f"models nest in a cycle: {' -> '.join((*trail, name))}")
        for spec in models[name].fields.values():
            inner, _ = element_type(spec.type)
            if inner in models:
                visit(inner, (*trail, name))

    for name in models:
        visit(name, ())
