"""Instances, connectors and roles in the configuration: what check-config explains, with the
file and key path, and a third-party connector added by installing a package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import load_settings
from system_apis.config import sandbox_ports
from system_apis.connectors import UnknownConnector, connectors, get
from system_apis.roles import ROLE_NAMES
from tests.config_files import edit, problems_of

INSTALLED = (
    "['hubspot-crm', 'hubspot-marketing', 'inventory', 'rest', 'salesforce', 'sap', 'stripe', "
    "'zendesk']"
)


def test_builtin_connectors_are_entry_points_and_cover_every_role() -> None:
    installed = connectors()
    assert INSTALLED == str(list(installed))
    provided = {role for c in installed.values() for role in c.roles}
    assert provided == set(ROLE_NAMES)
    assert get("salesforce").roles == ("crm",)
    assert get("hubspot-crm").roles == ("crm",)
    assert get("rest").roles == ()  # a declared system plays no role: served at its mount


def test_unknown_connector_suggests_the_closest() -> None:
    with pytest.raises(UnknownConnector) as err:
        get("salesfroce")
    assert err.value.hint == "did you mean 'salesforce'? "


def test_check_config_explains_an_unknown_connector(config_dir: Path) -> None:
    edit(config_dir / "backends.yaml", "connector: salesforce", "connector: salesfroce")
    assert problems_of(config_dir) == [
        "config/backends.yaml: crm.connector: unknown connector 'salesfroce'; "
        f"did you mean 'salesforce'? installed: {INSTALLED}"
    ]


def test_check_config_explains_a_missing_connector(config_dir: Path) -> None:
    edit(config_dir / "backends.yaml", "  connector: sap\n", "")
    assert problems_of(config_dir) == [
        "config/backends.yaml: erp.connector: required: the connector this instance runs; "
        f"installed: {INSTALLED}"
    ]


def test_check_config_explains_a_role_without_an_instance(config_dir: Path) -> None:
    edit(config_dir / "backends.yaml", "\nsupport:\n", "\nhelpdesk:\n")
    edit(
        config_dir / "backends.yaml", "connector: zendesk", "connector: zendesk\n  role: ticketing"
    )
    edit(config_dir / "roles.yaml", "support: support\n", "")
    assert problems_of(config_dir) == [
        "config/backends.yaml: helpdesk.role: connector 'zendesk' does not provide the role "
        "'ticketing'; it provides ['support']"
    ]
    edit(config_dir / "backends.yaml", "  role: ticketing\n", "")
    load_settings(config_dir)  # the one zendesk instance plays support
    edit(config_dir / "backends.yaml", "\nhelpdesk:\n", "\nhelpdesk-old:\n")
    text = (config_dir / "backends.yaml").read_text()
    start = text.index("\nhelpdesk-old:\n")
    end = text.index("\nmarketing:\n")
    (config_dir / "backends.yaml").write_text(text[:start] + text[end:])
    assert problems_of(config_dir) == [
        "config/roles.yaml: support: no instance serves the role 'support': add an instance "
        "whose connector provides it to backends.yaml, or name the instance here"
    ]


def test_check_config_explains_a_role_its_connector_does_not_provide(config_dir: Path) -> None:
    edit(config_dir / "roles.yaml", "crm: crm", "crm: billing")
    assert problems_of(config_dir) == [
        "config/roles.yaml: crm: instance 'billing' runs the connector 'stripe', which does not "
        "provide the role 'crm'; it provides ['billing']"
    ]
    edit(config_dir / "roles.yaml", "crm: billing", "crm: crm")
    edit(config_dir / "backends.yaml", "connector: stripe", "connector: stripe\n  role: crm")
    assert problems_of(config_dir) == [
        "config/backends.yaml: billing.role: connector 'stripe' does not provide the role "
        "'crm'; it provides ['billing']"
    ]


def two_billing_accounts(config_dir: Path) -> None:
    """billing becomes billing-eu and a second Stripe account, billing-us, with its own key."""
    path = config_dir / "backends.yaml"
    text = path.read_text()
    start = text.index("\nbilling:\n")
    end = text.index("\nsupport:\n")
    block = text[start:end]
    us = block.replace("\nbilling:\n", "\nbilling-us:\n").replace(
        "max_concurrency:", "# its own bulkhead\n  max_concurrency:"
    )
    path.write_text(
        text[:start] + block.replace("\nbilling:\n", "\nbilling-eu:\n") + us + text[end:]
    )


def test_two_instances_of_one_connector_need_a_choice_of_role(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the inbound webhook source "billing" no longer names a sandbox instance: its own secret
    monkeypatch.setenv("TRELLIS_BILLING_WEBHOOK_SECRET", "whsec-of-this-test")
    two_billing_accounts(config_dir)
    assert problems_of(config_dir) == [
        "config/roles.yaml: billing: unknown instance 'billing'; instances: "
        "['billing-eu', 'billing-us', 'crm', 'erp', 'inventory', 'marketing', 'shipping', "
        "'support']"
    ]
    edit(config_dir / "roles.yaml", "billing: billing\n", "")
    assert problems_of(config_dir) == [
        "config/roles.yaml: billing: instances ['billing-eu', 'billing-us'] all play the role "
        "'billing': name the one to use"
    ]
    (config_dir / "roles.yaml").write_text("billing: billing-us\n")
    settings = load_settings(config_dir)
    assert settings.role_instances()["billing"] == "billing-us"
    ports = settings.sandbox_ports()
    assert len(set(ports.values())) == len(ports) == 8


def test_sandbox_ports_follow_names_not_file_order() -> None:
    assert sandbox_ports(9000, ["zeta", "alpha", "mid"]) == {
        "alpha": 9000,
        "mid": 9001,
        "zeta": 9002,
    }
    # an instance with its own port does not move the others
    fixed = sandbox_ports(9000, ["zeta", "alpha", "mid"], {"alpha": 9500})
    assert fixed == {"alpha": 9500, "mid": 9000, "zeta": 9001}


THIRD_PARTY = """
from system_apis.connectors import Connector
from system_apis.connectors.builtin import stripe

connector = Connector(
    name="acme-billing",
    roles=("billing",),
    client=stripe.client,
    routes=stripe.routes,
    sandbox=stripe.sandbox,
)
"""


def test_a_third_party_package_adds_a_connector_by_being_installed(
    config_dir: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "acme_trellis").mkdir(parents=True)
    (site / "acme_trellis" / "__init__.py").write_text(THIRD_PARTY)
    dist = site / "acme_trellis-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-trellis\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[trellis.connectors]\nacme-billing = acme_trellis:connector\n"
    )
    edit(config_dir / "backends.yaml", "connector: stripe", "connector: acme-billing")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    env.pop("TRELLIS_CONFIG_DIR", None)
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "billing=billing (acme-billing)" in out.stdout
    # without the package, the same configuration names a connector nobody installed
    del env["PYTHONPATH"]
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2
    assert "config/backends.yaml: billing.connector: unknown connector 'acme-billing'" in out.stderr


def test_a_broken_connector_package_is_named(config_dir: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "broken_trellis").mkdir(parents=True)
    (site / "broken_trellis" / "__init__.py").write_text("connector = {'name': 'broken'}\n")
    dist = site / "broken_trellis-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-trellis\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[trellis.connectors]\nbroken = broken_trellis:connector\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2
    assert (
        "config/backends.yaml: (top level): entry point 'broken' = 'broken_trellis:connector' "
        "(group trellis.connectors): not a Connector but dict"
    ) in out.stderr
