"""Billing against Stripe's published contract, not our sandbox's word.

The contract is the one Stripe publishes in its official Python SDK (``stripe``): the typed
parameters of each API method, generated from Stripe's OpenAPI document. Two directions:

- our client: every request it sends is recorded at the backend, and each parameter must be one
  the SDK's typed parameters of that endpoint name; ``Stripe-Version`` is pinned on every call;
- the sandbox: Stripe's own SDK drives it (objects, paging, errors, idempotency), and every
  parameter the sandbox takes must be one Stripe's contract names.

The SDK is generated for Stripe's newest API version while the client pins 2024-06-20; the
parameters used here exist in both (``docs/sandbox.md`` lists what the sandbox leaves out).
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import pytest
import stripe
from stripe import params as sdk

from system_apis.billing import STRIPE_VERSION, BillingClient
from system_apis.config import BackendConfig
from system_apis.models import InvoiceStatus, OrderLine
from system_apis.sandbox import billing as sandbox_billing
from system_apis.sandbox.billing import API_KEY, parse_form
from tests.conftest import SandboxThread
from tests.system.contracts.conftest import Backend

REQUEST_OPTIONS = frozenset(
    {
        "api_key",
        "content_type",
        "headers",
        "idempotency_key",
        "max_network_retries",
        "stripe_account",
        "stripe_context",
        "stripe_version",
    }
)
"""Keys of the SDK's parameter types that are options of the call, not API parameters."""

ENDPOINTS: list[tuple[str, str, type]] = [
    ("GET", r"/v1/customers", sdk.CustomerListParams),
    ("POST", r"/v1/customers", sdk.CustomerCreateParams),
    ("GET", r"/v1/customers/cus_\w+", sdk.CustomerRetrieveParams),
    ("GET", r"/v1/invoices", sdk.InvoiceListParams),
    ("POST", r"/v1/invoices", sdk.InvoiceCreateParams),
    ("GET", r"/v1/invoices/in_\w+", sdk.InvoiceRetrieveParams),
    ("POST", r"/v1/invoices/in_\w+/finalize", sdk.InvoiceFinalizeInvoiceParams),
    ("POST", r"/v1/invoices/in_\w+/pay", sdk.InvoicePayParams),
    ("POST", r"/v1/invoices/in_\w+/void", sdk.InvoiceVoidInvoiceParams),
    ("POST", r"/v1/invoices/in_\w+/mark_uncollectible", sdk.InvoiceMarkUncollectibleParams),
    ("GET", r"/v1/invoices/in_\w+/lines", sdk.InvoiceLineItemListParams),
    ("GET", r"/v1/invoiceitems", sdk.InvoiceItemListParams),
    ("POST", r"/v1/invoiceitems", sdk.InvoiceItemCreateParams),
    ("GET", r"/v1/invoiceitems/ii_\w+", sdk.InvoiceItemRetrieveParams),
    ("GET", r"/v1/payment_intents", sdk.PaymentIntentListParams),
    ("GET", r"/v1/payment_intents/pi_\w+", sdk.PaymentIntentRetrieveParams),
    ("POST", r"/v1/webhook_endpoints", sdk.WebhookEndpointCreateParams),
    ("GET", r"/v1/webhook_endpoints", sdk.WebhookEndpointListParams),
]

SANDBOX_ONLY_IN_PINNED_VERSION = {"unit_amount"}
"""Taken by ``/v1/invoiceitems`` in 2024-06-20 and gone from the newest version's contract."""


def published_params(params_type: type) -> frozenset[str]:
    keys = params_type.__required_keys__ | params_type.__optional_keys__  # type: ignore[attr-defined]
    return frozenset(keys) - REQUEST_OPTIONS


def contract_of(method: str, path: str) -> frozenset[str]:
    for m, pattern, params_type in ENDPOINTS:
        if m == method and re.fullmatch(pattern, path):
            return published_params(params_type)
    raise AssertionError(f"{method} {path} is no endpoint of Stripe's published API here")


def config() -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "sandbox": True,
            "auth": {
                "kind": "api_key",
                "header": "Authorization",
                "prefix": "Bearer ",
                "key": API_KEY,
            },
            "retry": {"max_attempts": 1},
        }
    )


# --- our client against the published contract ----------------------------------------------


async def test_every_request_of_the_client_is_in_stripes_published_contract(
    recorded_backend: Backend,
) -> None:
    backend = await recorded_backend(sandbox_billing.create_app())
    client = BillingClient(config(), base_url=backend.url)
    await client.start()
    try:
        email = f"contract-{uuid.uuid4().hex[:10]}@example.com"
        customer = await client.create_customer(email, "Contract Test", crm_contact_id="003X")
        assert (await client.find_customer_by_email(email)) is not None
        assert (await client.get_customer(customer.id)).email == email
        lines = [
            OrderLine(sku="SKU-0001", quantity=3, unit_price=Decimal("19.99")),
            OrderLine(sku="SKU-0002", quantity=1, unit_price=Decimal("0.01")),
        ]
        inv = await client.create_invoice(customer.id, lines, order_ref="4500000001")
        assert inv.status is InvoiceStatus.OPEN and inv.total == Decimal("59.98")
        await client.invoices_page(customer_id=customer.id, status=InvoiceStatus.OPEN)
        assert (await client.pay_invoice(inv.id)).status is InvoiceStatus.PAID
        other = await client.create_invoice(customer.id, [Decimal("5.00")], description="fee")
        assert (await client.void_invoice(other.id)).status is InvoiceStatus.VOID
        await client.payments_page(customer.id)
    finally:
        await client.close()

    endpoints = {(s.method, re.sub(r"_\w+$", "_", s.path.rsplit("/", 1)[-1])) for s in backend.sent}
    assert len(endpoints) >= 8, endpoints  # every kind of call above reached the backend
    for sent in backend.sent:
        assert sent.headers.get("Stripe-Version") == STRIPE_VERSION, sent.path
        pairs = (
            parse_qsl(sent.body.decode(), keep_blank_values=True)
            if sent.method == "POST"
            else sent.query
        )
        allowed = contract_of(sent.method, sent.path)
        unknown = set(parse_form(pairs)) - allowed
        assert not unknown, f"{sent.method} {sent.path} sends {unknown}, not in Stripe's contract"
    invoice_creates = [s for s in backend.sent if s.method == "POST" and s.path == "/v1/invoices"]
    assert all(b"lines" not in s.body for s in invoice_creates)
    items = [s for s in backend.sent if s.path == "/v1/invoiceitems"]
    assert len(items) == 3  # one invoice item per line, each added to its draft


def test_the_sandbox_takes_no_parameter_stripe_does_not_publish() -> None:
    """Each allow-list of the sandbox is within the endpoint's published parameters."""
    checks = {
        sandbox_billing.CUSTOMER_CREATE: sdk.CustomerCreateParams,
        sandbox_billing.CUSTOMER_LIST: sdk.CustomerListParams,
        sandbox_billing.INVOICE_CREATE: sdk.InvoiceCreateParams,
        sandbox_billing.INVOICE_LIST: sdk.InvoiceListParams,
        sandbox_billing.INVOICE_ITEM_LIST: sdk.InvoiceItemListParams,
        sandbox_billing.FINALIZE: sdk.InvoiceFinalizeInvoiceParams,
        sandbox_billing.PAY: sdk.InvoicePayParams,
        sandbox_billing.VOID: sdk.InvoiceVoidInvoiceParams,
        sandbox_billing.PAYMENT_LIST: sdk.PaymentIntentListParams,
        sandbox_billing.WEBHOOK_CREATE: sdk.WebhookEndpointCreateParams,
        sandbox_billing.RETRIEVE: sdk.InvoiceRetrieveParams,
    }
    for allowed, params_type in checks.items():
        assert allowed <= published_params(params_type), (params_type.__name__, allowed)
    item_params = sandbox_billing.INVOICE_ITEM_CREATE - SANDBOX_ONLY_IN_PINNED_VERSION
    assert item_params <= published_params(sdk.InvoiceItemCreateParams)


# --- Stripe's own SDK against the sandbox ----------------------------------------------------


@pytest.fixture
def stripe_client(sandbox: SandboxThread) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY,
        base_addresses={"api": sandbox.url("billing")},
        stripe_version=STRIPE_VERSION,
        max_network_retries=0,
    )


def _customer(sc: stripe.StripeClient) -> stripe.Customer:
    return sc.v1.customers.create(
        params={"email": f"sdk-{uuid.uuid4().hex[:10]}@example.com", "name": "SDK Test"}
    )


def test_stripes_sdk_bills_an_invoice_through_invoice_items(
    stripe_client: stripe.StripeClient,
) -> None:
    sc = stripe_client
    customer = _customer(sc)
    assert isinstance(customer, stripe.Customer) and customer.id.startswith("cus_")
    draft = sc.v1.invoices.create(
        params={
            "customer": customer.id,
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "pending_invoice_items_behavior": "exclude",
            "metadata": {"order_ref": "4500000002"},
        }
    )
    assert isinstance(draft, stripe.Invoice) and draft.status == "draft" and draft.total == 0
    item = sc.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "invoice": draft.id,
            "currency": "usd",
            "quantity": 3,
            "unit_amount_decimal": "1999",
            "description": "SKU-0001",
        }
    )
    assert isinstance(item, stripe.InvoiceItem) and item.amount == 5997
    sc.v1.invoice_items.create(params={"customer": customer.id, "invoice": draft.id, "amount": 3})
    lines = sc.v1.invoices.line_items.list(draft.id, params={"limit": 1})
    assert [ln.amount for ln in lines.auto_paging_iter()] == [5997, 3]
    opened = sc.v1.invoices.finalize_invoice(draft.id)
    assert opened.status == "open" and opened.amount_due == 6000
    assert opened.metadata["order_ref"] == "4500000002"
    paid = sc.v1.invoices.pay(draft.id)
    assert paid.status == "paid" and paid.amount_paid == 6000
    with pytest.raises(stripe.InvalidRequestError) as info:
        sc.v1.invoice_items.create(
            params={"customer": customer.id, "invoice": draft.id, "amount": 1}
        )
    assert info.value.code == "invoice_not_editable"
    listed = sc.v1.invoices.list(params={"customer": customer.id, "limit": 1})
    assert [i.id for i in listed.auto_paging_iter()] == [draft.id]


def test_stripes_sdk_sees_an_unknown_parameter_refused_as_stripe_refuses_it(
    stripe_client: stripe.StripeClient,
) -> None:
    """A draft with ``lines[...]`` (no such parameter at Stripe) is refused, not billed."""
    customer = _customer(stripe_client)
    params: Any = {"customer": customer.id, "lines": [{"amount": 100}]}
    with pytest.raises(stripe.InvalidRequestError) as info:
        stripe_client.v1.invoices.create(params=params)
    err = info.value
    assert err.http_status == 400 and err.code == "parameter_unknown" and err.param == "lines"
    assert err.error is not None and err.error.type == "invalid_request_error"
    listed = stripe_client.v1.invoices.list(params={"customer": customer.id})
    assert listed.data == []  # nothing was created
    with pytest.raises(stripe.InvalidRequestError) as unknown_query:
        stripe_client.v1.customers.list(params={"emial": "x@example.com"})  # type: ignore[typeddict-unknown-key]
    assert unknown_query.value.param == "emial"


def test_stripes_sdk_sees_stripes_errors_and_idempotency(
    stripe_client: stripe.StripeClient, sandbox: SandboxThread
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.invoices.retrieve("in_doesnotexist")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    key = uuid.uuid4().hex
    email = f"idem-{key[:10]}@example.com"
    first = stripe_client.v1.customers.create(
        params={"email": email}, options={"idempotency_key": key}
    )
    again = stripe_client.v1.customers.create(
        params={"email": email}, options={"idempotency_key": key}
    )
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.customers.create(
            params={"email": "other@example.com"}, options={"idempotency_key": key}
        )
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": sandbox.url("billing")}, max_network_retries=0
        ).v1.customers.list()


def test_an_api_version_stripe_does_not_have_is_refused(sandbox: SandboxThread) -> None:
    client = stripe.StripeClient(
        API_KEY,
        base_addresses={"api": sandbox.url("billing")},
        stripe_version="2099-01-01",
        max_network_retries=0,
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.list()
    assert info.value.http_status == 400 and "API version" in str(info.value.user_message)
