"""A ``rest`` instance's declaration is checked when the configuration loads: each problem
names the file and the key path, as ``trellis check-config`` prints it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
from system_apis.rest.config import RestBackendConfig
from tests.config_files import edit, problems_of


def test_the_shipped_shipping_instance_is_a_rest_instance_with_its_fixture() -> None:
    shipping = load_settings(DEFAULT_CONFIG_DIR).backends["shipping"]
    assert isinstance(shipping, RestBackendConfig)
    assert shipping.fixture == DEFAULT_CONFIG_DIR / "fixtures" / "shipping.yaml"
    assert set(shipping.resources) == {"shipments", "tracking-events"}


def test_a_fixture_is_read_from_the_configuration_directory(config_dir: Path) -> None:
    shipping = load_settings(config_dir).backends["shipping"]
    assert isinstance(shipping, RestBackendConfig)
    assert shipping.fixture == config_dir / "fixtures" / "shipping.yaml"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "weight_kg: {type: number, path: parcel.weight.value}",
            'weight_kg: {type: number, path: "parcel.weight.[value"}',
            "config/backends.yaml: shipping.models.Shipment.fields.weight_kg.path: not a "
            "JMESPath expression",
        ),
        (
            "weight_kg: {type: number,",
            "weight_kg: {type: decimal,",
            "config/backends.yaml: shipping.models: Shipment.fields.weight_kg.type: "
            "unknown type 'decimal'",
        ),
        (
            "      model: TrackingEvent\n",
            "      model: TrackingEvents\n",
            "config/backends.yaml: shipping: resources.tracking-events.model: "
            "unknown model 'TrackingEvents'",
        ),
        (
            "        style: cursor\n",
            "        style: cursors\n",
            "config/backends.yaml: shipping.resources.shipments.paging.style: Input should be",
        ),
        (
            "        next_field: pagination.next_cursor\n",
            "",
            "config/backends.yaml: shipping.resources.shipments.paging: paging "
            "style cursor needs next_field",
        ),
        (
            "      items_path: data\n",
            "      items_path: data\n      list_path: data\n",
            "config/backends.yaml: shipping.resources.shipments.list_path: unknown key",
        ),
        (
            'id_pattern: "SHP-[0-9]{6}"',
            'id_pattern: "SHP-[0-9"',
            "config/backends.yaml: shipping.resources.shipments.id_pattern: not a "
            "regular expression",
        ),
        (
            "  fixture: fixtures/shipping.yaml\n",
            "  fixture: fixtures/shiping.yaml\n",
            "config/backends.yaml: shipping.fixture: no such file",
        ),
        (
            "  fixture: fixtures/shipping.yaml\n",
            "",
            "config/backends.yaml: shipping: sandbox: true needs fixture",
        ),
    ],
)
def test_check_config_names_the_file_and_key_of_a_rest_problem(
    config_dir: Path, old: str, new: str, problem: str
) -> None:
    edit(config_dir / "backends.yaml", old, new)
    [found] = problems_of(config_dir)
    assert found.startswith(problem), found


def test_check_config_explains_a_fixture_the_sandbox_would_refuse(config_dir: Path) -> None:
    edit(config_dir / "fixtures" / "shipping.yaml", "tracking-events:\n", "tracking:\n")
    [found] = problems_of(config_dir)
    assert found.startswith("config/backends.yaml: shipping: fixture: "), found
    assert found.endswith(
        "shipping.yaml: tracking: not a declared resource ['shipments', 'tracking-events']"
    ), found


def test_a_rest_instance_plays_no_role(config_dir: Path) -> None:
    edit(config_dir / "backends.yaml", "  connector: rest\n", "  connector: rest\n  role: crm\n")
    problems = problems_of(config_dir)
    assert (
        "config/backends.yaml: shipping.role: connector 'rest' does not provide the role 'crm'; "
        "it provides []"
    ) in problems


def test_trellis_check_config_prints_the_problem(config_dir: Path) -> None:
    edit(config_dir / "backends.yaml", "      model: TrackingEvent\n", "      model: Tracking\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "shipping" in done.stderr + done.stdout
    assert "resources.tracking-events.model: unknown model 'Tracking'" in done.stderr + done.stdout
