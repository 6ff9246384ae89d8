"""Masking rules as pure functions, and the channel policies shipped in config."""

from __future__ import annotations

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


def test_payload_masks_at_any_depth_without_touching_the_input() -> None:
    policy = {"email": MaskRule.EMAIL, "phone": MaskRule.PHONE, "customer_number": MaskRule.DROP}
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


def test_shipped_partner_policy() -> None:
    config = load_settings(DEFAULT_CONFIG_DIR).experience
    event = {
        "data": {
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "crm_contact_id": "003TR0000000000001",
            "total": "10.00",
        }
    }
    assert mask_for_channel(config, "partner", event) == {
        "data": {"email": "a***@example.com", "name": "A. L.", "total": "10.00"}
    }
    assert mask_for_channel(config, "web", event) == event
    assert mask_for_channel(ExperienceConfig(), "partner", event) == event
