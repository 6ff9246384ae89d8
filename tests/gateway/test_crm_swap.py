"""The CRM switch of the test harness and of ``trellis sandbox``: which CRM a configuration
serves, and what the seed's cross-references point at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
from system_apis.sandbox import seed
from system_apis.sandbox.server import DEFAULT_INSTANCES, seed_crm
from tests import crm_swap


@pytest.fixture
def hubspot_switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(crm_swap.ENV, "hubspot-crm")
    crm_swap.config_dir.cache_clear()
    yield
    monkeypatch.undo()
    crm_swap.config_dir.cache_clear()


def test_the_switch_serves_the_crm_role_from_the_hubspot_connector(hubspot_switch: None) -> None:
    assert crm_swap.swapped() and crm_swap.crm() is crm_swap.HUBSPOT
    path = crm_swap.config_dir()
    assert path != DEFAULT_CONFIG_DIR
    settings = load_settings(path)
    assert settings.backends["crm"].connector == "hubspot-crm"
    assert settings.backends["crm"].critical
    assert settings.role_instances()["crm"] == "crm"
    assert settings.backends["erp"] == load_settings(DEFAULT_CONFIG_DIR).backends["erp"]
    assert crm_swap.sandbox_instances(dict(DEFAULT_INSTANCES))["crm"] == "hubspot-crm"


def test_an_unknown_crm_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crm_swap.ENV, "dynamics")
    with pytest.raises(LookupError, match="dynamics"):
        crm_swap.crm()
    with pytest.raises(LookupError, match="dynamics"):
        seed.use_crm("dynamics")


def test_the_sandbox_seeds_cross_references_to_the_crm_it_serves() -> None:
    assert seed_crm(DEFAULT_INSTANCES) == "salesforce"
    assert seed_crm({**DEFAULT_INSTANCES, "crm": "hubspot-crm"}) == "hubspot-crm"
    assert seed_crm({**DEFAULT_INSTANCES, "crm-us": "hubspot-crm"}) is None  # two: ambiguous
    assert seed_crm({"erp": "sap"}) is None


def test_each_crm_names_the_seed_records_in_its_own_syntax() -> None:
    from system_apis.crm import RECORD_ID as SALESFORCE_ID
    from system_apis.hubspot_crm import RECORD_ID as HUBSPOT_ID

    for ids, syntax in (
        (seed.CRM_IDS["salesforce"], SALESFORCE_ID),
        (seed.CRM_IDS["hubspot-crm"], HUBSPOT_ID),
    ):
        made = [ids.account(1), ids.contact(1000), ids.deal(600), ids.lead(50), ids.missing_contact]
        assert all(syntax.matches(i) for i in made), made
        assert len({ids.account(1), ids.contact(1), ids.deal(1), ids.lead(1)}) == 4
