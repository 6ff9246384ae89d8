"""From a vendor's JSON record to a declared output model.

Each model of the YAML becomes a pydantic model (so OpenAPI documents it like any canonical
model); each field is read with its JMESPath expression, then the whole record is validated in
pydantic's strict JSON mode: a string is never taken for a number, a timestamp must be ISO 8601
with its zone. A record that does not fit is ``BadBackendData`` naming the vendor's path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

import jmespath
import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, create_model

from ..errors import BadBackendData
from .config import ModelSpec, element_type

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_SCALARS: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "datetime": AwareDatetime,
    "date": date,
}


class Output(BaseModel):
    """Base of every declared output model: what the YAML names, nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def class_name(instance: str, model: str) -> str:
    """``shipping`` + ``Shipment`` -> ``ShippingShipment``: unique across instances."""
    words = [w for w in instance.replace("-", "_").split("_") if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + model[:1].upper() + model[1:]


class FieldReader:
    """One output field: its compiled path, its type, the model it nests (if any)."""

    __slots__ = ("expression", "many", "mapper", "name", "path", "required")

    def __init__(self, name: str, path: str, required: bool, many: bool) -> None:
        self.name = name
        self.path = path
        self.expression = jmespath.compile(path)
        self.required = required
        self.many = many
        self.mapper: Mapper | None = None


class Mapper:
    """Maps one vendor record to one output model (nested models through their own mapper)."""

    def __init__(self, backend: str, model: type[Output], readers: list[FieldReader]) -> None:
        self.backend = backend
        self.model = model
        self.readers = readers

    def fields(self, raw: Any, record: str | None, prefix: str = "") -> dict[str, Any]:
        """The output fields of ``raw`` before type checks: read, required ones present."""
        if not isinstance(raw, dict):
            raise BadBackendData(self.backend, "a record is not an object", record=record)
        out: dict[str, Any] = {}
        for reader in self.readers:
            value = reader.expression.search(raw)
            where = prefix + reader.path
            if value is None:
                if reader.required:
                    raise BadBackendData(self.backend, "missing", record=record, field=where)
                continue
            if reader.mapper is not None:
                if reader.many:
                    if not isinstance(value, list):
                        raise BadBackendData(self.backend, "not a list", record=record, field=where)
                    value = [
                        reader.mapper.fields(v, record, f"{where}[{i}].")
                        for i, v in enumerate(value)
                    ]
                else:
                    value = reader.mapper.fields(value, record, f"{where}.")
            out[reader.name] = value
        return out

    def __call__(self, raw: Any, record: str | None = None) -> Output:
        fields = self.fields(raw, record)
        try:
            return self.model.model_validate_json(orjson.dumps(fields), strict=True)
        except orjson.JSONEncodeError as exc:  # not reachable from parsed JSON; said clearly
            raise BadBackendData(self.backend, f"unencodable record: {exc}", record=record) from exc
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            raise BadBackendData(
                self.backend,
                f"{self.model.__name__} field is invalid: {err['msg']}",
                record=record,
                field=self._vendor_path(err["loc"]),
            ) from None

    def _vendor_path(self, loc: tuple[int | str, ...]) -> str:
        """The vendor's path of an output location (``events.0.at`` -> ``history[0].time``)."""
        mapper: Mapper | None = self
        parts: list[str] = []
        i = 0
        while mapper is not None and i < len(loc):
            reader = next((r for r in mapper.readers if r.name == loc[i]), None)
            if reader is None:
                break
            parts.append(reader.path)
            i += 1
            if reader.many and i < len(loc) and isinstance(loc[i], int):
                parts[-1] += f"[{loc[i]}]"
                i += 1
            mapper = reader.mapper
        return ".".join(parts) or ".".join(str(p) for p in loc)


def build_mappers(backend: str, models: Mapping[str, ModelSpec]) -> dict[str, Mapper]:
    """A mapper (and its pydantic model) for every declared model, nested ones first."""
    built: dict[str, Mapper] = {}

    def build(name: str) -> Mapper:
        if name in built:
            return built[name]
        spec = models[name]
        definitions: dict[str, Any] = {}
        readers: list[FieldReader] = []
        for field_name, field_spec in spec.fields.items():
            inner, many = element_type(field_spec.type)
            nested = build(inner) if inner in models else None
            base: Any = nested.model if nested is not None else _SCALARS[inner]
            annotation: Any = list[base] if many else base
            info = Field(description=field_spec.description or None)
            if not field_spec.required:
                annotation = annotation | None
                info = Field(None, description=field_spec.description or None)
            definitions[field_name] = (annotation, info)
            reader = FieldReader(
                field_name, field_spec.path or _quoted(field_name), field_spec.required, many
            )
            reader.mapper = nested
            readers.append(reader)
        model = create_model(
            class_name(backend, name),
            __base__=Output,
            __doc__=spec.description or f"{name}, as {backend} declares it.",
            __module__=__name__,
            **definitions,
        )
        built[name] = Mapper(backend, model, readers)
        return built[name]

    for name in models:
        build(name)
    return built


def _quoted(name: str) -> str:
    """A field name as a JMESPath expression: bare where it is an identifier (as config's
    ``NAME`` makes every field name), so messages name ``qty``, not ``"qty"``."""
    if _IDENTIFIER.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
