"""What every backend's mapping shares: building a canonical model from vendor fields.

A value the canonical model refuses becomes ``BadBackendData`` naming the backend, the record
and the field (the vendor's name for it when the renames are given), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from .errors import BadBackendData

M = TypeVar("M")


def build_model(
    backend: str,
    model: Callable[..., M],
    fields: Mapping[str, Any],
    record: str | None,
    renames: Mapping[str, str] | None = None,
) -> M:
    """``model(**fields)``; ``renames`` (vendor -> canonical) names the failing vendor field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        if renames and err["loc"]:
            canon = str(err["loc"][0])
            field = next((v for v, c in renames.items() if c == canon), field)
        name = getattr(model, "__name__", "record")
        raise BadBackendData(
            backend, f"{name} field is invalid: {err['msg']}", record=record, field=field
        ) from exc
