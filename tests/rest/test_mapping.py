"""Declared models and their mapping: types, required fields, renames, nested paths, lists."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from system_apis.errors import BadBackendData
from system_apis.rest.config import ModelSpec
from system_apis.rest.mapping import Mapper, build_mappers

MODELS: dict[str, Any] = {
    "Order": {
        "fields": {
            "id": {"path": "order_no", "required": True},
            "count": {"type": "integer", "path": "totals.items"},
            "paid": {"type": "boolean"},
            "placed_at": {"type": "datetime", "path": "placed", "required": True},
            "ship_by": {"type": "date"},
            "tags": {"type": "list[string]", "path": "labels[*].name"},
            "lines": {"type": "list[Line]", "path": "lines"},
            "buyer": {"type": "Buyer", "path": "customer"},
        }
    },
    "Line": {"fields": {"sku": {"path": "item.sku", "required": True}, "qty": {"type": "integer"}}},
    "Buyer": {"fields": {"email": {"path": "contact.email"}}},
}

GOOD: dict[str, Any] = {
    "order_no": "A-1",
    "totals": {"items": 3},
    "paid": True,
    "placed": "2026-11-02T10:00:00+01:00",
    "ship_by": "2026-11-04",
    "labels": [{"name": "gift"}, {"name": "fragile"}],
    "lines": [{"item": {"sku": "S-1"}, "qty": 2}, {"item": {"sku": "S-2"}}],
    "customer": {"contact": {"email": "a@example.com"}},
    "internal": "never mapped",
}


@pytest.fixture(scope="module")
def order() -> Mapper:
    models = {name: ModelSpec.model_validate(spec) for name, spec in MODELS.items()}
    return build_mappers("shop", models)["Order"]


def test_a_record_maps_with_renames_nested_paths_and_lists(order: Mapper) -> None:
    out = order(GOOD).model_dump()
    assert out == {
        "id": "A-1",
        "count": 3,
        "paid": True,
        "placed_at": datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        "ship_by": date(2026, 11, 4),
        "tags": ["gift", "fragile"],
        "lines": [{"sku": "S-1", "qty": 2}, {"sku": "S-2", "qty": None}],
        "buyer": {"email": "a@example.com"},
    }
    assert type(order(GOOD)).__name__ == "ShopOrder"  # unique across instances in OpenAPI


def test_optional_fields_absent_are_null(order: Mapper) -> None:
    out = order({"order_no": "A-2", "placed": "2026-11-02T10:00:00Z"}).model_dump()
    assert out["count"] is None and out["lines"] is None and out["buyer"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"order_no": None}, "order_no"),
        ({"totals": {"items": "3"}}, "totals.items"),  # a string is never taken for a number
        ({"totals": {"items": 2.5}}, "totals.items"),
        ({"paid": "yes"}, "paid"),
        ({"placed": "2026-11-02T10:00:00"}, "placed"),  # no time zone
        ({"placed": "yesterday"}, "placed"),
        ({"ship_by": "04/11/2026"}, "ship_by"),
        ({"lines": [{"item": {"sku": "S-1"}}, {"item": {}}]}, "lines[1].item.sku"),
        ({"lines": [{"item": {"sku": "S-1"}, "qty": "2"}]}, "lines[0].qty"),
        ({"lines": {"item": {"sku": "S-1"}}}, "lines"),
        ({"customer": "someone"}, None),
    ],
)
def test_a_record_that_does_not_fit_is_bad_data_naming_the_vendor_path(
    order: Mapper, change: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(BadBackendData) as err:
        order({**GOOD, **change}, record="A-1")
    assert err.value.record == "A-1"
    if field is not None:
        assert err.value.field == field


def test_a_record_that_is_not_an_object_is_bad_data(order: Mapper) -> None:
    with pytest.raises(BadBackendData):
        order(["A-1"])
