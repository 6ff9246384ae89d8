"""A client generated from /openapi.json by openapi-python-client works against the gateway.

The generator is a third party reading the document as any SDK tool would: a schema it cannot
name or resolve is dropped with every schema and response that refers to it, so the test fails
on any warning it prints, then calls the customer 360, places an order and lists the partner's
orders with the generated, typed functions.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from argon2 import PasswordHasher

from gateway.app import create_app
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.docs.live import GatewayThread
from tests.gateway.helpers import test_settings

PACKAGE = "trellis_generated_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PARTNER = "partner-sdk-test"
PERSON = seed.people()[-3]
SKU = next(s.sku for s in seed.skus() if s.on_hand >= 150)


@pytest.fixture(scope="module")
def live_gateway(
    sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """The test gateway with a partner of its own, whose orders only this module places."""
    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    partner = {
        "secret_hash": hasher.hash(f"{PARTNER}-secret"),
        "scopes": ["partner"],
        "tier": "partner-standard",
    }
    tmp = tmp_path_factory.mktemp("generated-client-gw")
    gw = GatewayThread(
        create_app(test_settings(sandbox.base_port, tmp, clients={PARTNER: partner}))
    )
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def generated(
    live_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """The client package generated from the served document, importable for this module."""
    root = tmp_path_factory.mktemp("generated-client")
    spec = root / "openapi.json"
    served = requests.get(live_gateway.url + "/openapi.json", timeout=30)
    assert served.status_code == 200
    spec.write_bytes(served.content)
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(GENERATOR), "generate", "--path", str(spec), "--meta", "none"]
    run = subprocess.run(
        [*command, "--output-path", str(root / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Warning" not in output and "Unable" not in output, output
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _client(generated: ModuleType, gw: GatewayThread, client_id: str) -> Any:
    return generated.AuthenticatedClient(
        base_url=gw.url, token=gw.token(client_id), raise_on_unexpected_status=True
    )


def test_every_component_becomes_a_model(
    generated: ModuleType, live_gateway: GatewayThread
) -> None:
    models = _module("models")
    schemas = requests.get(live_gateway.url + "/openapi.json", timeout=30).json()["components"]
    for name in ("Order", "PlacedOrder", "Reservation", "OrderLine", "Customer360"):
        assert name in schemas["schemas"], name
        assert hasattr(models, name), name


def test_customer_360_order_and_partner_orders(
    generated: ModuleType, live_gateway: GatewayThread
) -> None:
    models = _module("models")
    get_360 = _module("api.process.get_process_v1_customers_id")
    place = _module("api.process.post_process_v1_orders")
    get_order = _module("api.process.get_process_v1_orders_id")
    partner_orders = _module("api.experience_partner.get_experience_partner_v1_orders")

    with _client(generated, live_gateway, "test-everything") as client:
        view = get_360.sync(PERSON.crm_contact_id, client=client)
        assert isinstance(view, models.Customer360), view
        assert view.id == PERSON.crm_contact_id
        assert view.contact.email == PERSON.email
        assert isinstance(view.erp, models.ErpSection)
        assert all(isinstance(o, models.Order) for o in view.erp.open_orders)

        request = models.PlaceOrderRequest(
            customer_id=PERSON.crm_contact_id,
            lines=[models.OrderLineRequest(sku=SKU, quantity=2)],
            channel=PARTNER,
        )
        answer = place.sync_detailed(client=client, body=request, idempotency_key=uuid.uuid4().hex)
        assert answer.status_code == 201, answer.content
        placed = answer.parsed
        assert isinstance(placed, models.PlacedOrder), placed
        assert [(line.sku, line.quantity) for line in placed.lines] == [(SKU, 2)]
        assert isinstance(placed.lines[0], models.OrderLine)
        # the Location of the new order reads it back
        location = answer.headers["location"]
        assert location == f"/process/v1/orders/{placed.id}"
        detail = get_order.sync(location.rsplit("/", 1)[1], client=client)
        assert isinstance(detail, models.OrderDetail), detail

    with _client(generated, live_gateway, PARTNER) as partner:
        page = partner_orders.sync(client=partner, limit=100)
        assert isinstance(page, models.PagePartnerOrderSummary), page
        assert all(isinstance(o, models.PartnerOrderSummary) for o in page.items)
        mine = [o for o in page.items if o.id == placed.id]
        assert len(mine) == 1 and mine[0].line_count == 1
