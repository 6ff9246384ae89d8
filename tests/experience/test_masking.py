"""Masking rules as pure functions, and the channel policies shipped in config."""

from __future__ import annotations

import pytest

from experience_apis.config import ExperienceConfig, MaskRule
from experience_apis.masking import (
    mask_email,
    mask_for_channel,
    mask_initial,
    mask_payload,
    mask_phone,
)
from gateway.settings import DEFAULT_CONFIG_DIR, load_settings


def test_rules() -> None:
    assert mask_email("ada.lovelace@example.com") == "a***@example.com"
    assert mask_email("broken") == "***"
    assert mask_phone("+1-555-322-3969") == "*********69"
    assert mask_phone("7") == "*"
    assert mask_initial("Ada Lovelace") == "A. L."


def test_payload_masks_the_fields_its_paths_name_without_touching_the_input() -> None:
    policy = {
        "order.buyer.email": MaskRule.EMAIL,
        "order.buyer.phone": MaskRule.PHONE,
        "order.customer_number": MaskRule.DROP,
        "items[].email": MaskRule.EMAIL,
        "email": MaskRule.EMAIL,
    }
    data = {
        "order": {
            "customer_number": "0000100001",
            "buyer": {"email": "bo@x.io", "phone": "+49 30 1234"},
        },
        "items": [{"email": "c@y.io"}],
        "email": None,
    }
    masked = mask_payload(data, policy)
    assert masked == {
        "order": {"buyer": {"email": "b***@x.io", "phone": "******34"}},
        "items": [{"email": "c***@y.io"}],
        "email": None,
    }
    assert data["order"]["customer_number"] == "0000100001"  # input untouched


def test_a_field_is_masked_only_where_its_path_says() -> None:
    policy = {"buyer.name": MaskRule.INITIAL, "orders[].customer.email": MaskRule.EMAIL}
    data = {
        "name": "Widget B20",
        "buyer": {"name": "Ada Lovelace"},
        "lines": [{"name": "Gadget C30"}],
        "orders": [{"customer": {"email": "ada@example.com", "name": "Ada"}}, {"customer": None}],
        "customer": {"email": "kept@example.com"},
    }
    assert mask_payload(data, policy) == {
        "name": "Widget B20",
        "buyer": {"name": "A. L."},
        "lines": [{"name": "Gadget C30"}],
        "orders": [{"customer": {"email": "a***@example.com", "name": "Ada"}}, {"customer": None}],
        "customer": {"email": "kept@example.com"},
    }


def test_masking_paths_are_checked() -> None:
    with pytest.raises(ValueError, match="masking path"):
        ExperienceConfig.model_validate({"channels": {"partner": {"masking": {"a..b": "drop"}}}})
    with pytest.raises(ValueError, match="masking path"):
        mask_payload({}, {"[]": MaskRule.DROP})


def test_shipped_partner_policy() -> None:
    config = load_settings(DEFAULT_CONFIG_DIR).experience
    placed = {  # an order.placed event's data, as partner webhooks send it
        "id": "4500000001",
        "order_id": "4500000001",
        "email": "ada@example.com",
        "crm_contact_id": "003TR0000000000001",
        "customer_id": "003TR0000000000001",
        "invoice_id": "in_1",
        "reservation_id": "res_1",
        "total": "10.00",
        "lines": [{"sku": "SKU-0001", "quantity": 1, "unit_price": "10.00"}],
    }
    assert mask_for_channel(config, "partner", placed) == {
        "id": "4500000001",
        "order_id": "4500000001",
        "email": "a***@example.com",
        "total": "10.00",
        "lines": [{"sku": "SKU-0001", "quantity": 1, "unit_price": "10.00"}],
    }
    order = {"id": "4500000001", "buyer": {"name": "Ada Lovelace", "email": "ada@example.com"}}
    assert mask_for_channel(config, "partner", order)["buyer"] == {
        "name": "A. L.",
        "email": "a***@example.com",
    }
    product = {"sku": "SKU-0002", "name": "Widget B20", "available": 3, "unit_price": "9.50"}
    assert mask_for_channel(config, "partner", product) == product
    assert mask_for_channel(config, "web", placed) == placed
    assert mask_for_channel(ExperienceConfig(), "partner", placed) == placed
