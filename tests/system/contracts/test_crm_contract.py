"""The CRM against Salesforce's contract as its most used Python client speaks it.

Salesforce publishes no machine-readable REST contract in a package; ``simple-salesforce``
(the client most Python integrations use) is the reference here. It drives the sandbox over
HTTPS (it only speaks https), with its own URL forms (trailing slashes on ``query/`` and
``sobjects/Contact/``), its paging through ``nextRecordsUrl`` and its error classes; and our
client's requests must be requests simple-salesforce also sends for the same operations.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceResourceNotFound,
)

from system_apis.config import BackendConfig
from system_apis.crm import ContactCreate, CrmClient
from system_apis.sandbox import crm as sandbox_crm
from tests.egress.certs import PrivateCA
from tests.system.contracts.conftest import Backend, Recorded

pytestmark = pytest.mark.vendor_crm("salesforce")

VERSION = "60.0"


def _server_context(ca: PrivateCA) -> ssl.SSLContext:
    leaf = ca.issue("crm.sandbox", ips=("127.0.0.1",))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(leaf.cert, leaf.key)
    return ctx


def _template(path: str) -> str:
    """A path with record ids and query locators as placeholders, without a trailing slash."""
    path = re.sub(r"/[0-9a-zA-Z]{3}TR[0-9A-Za-z]{10,13}(?=/|$)", "/{id}", path.rstrip("/"))
    path = re.sub(r"/[0-9a-zA-Z]{15,18}(?=/|$)", "/{id}", path)
    return re.sub(r"/query/[0-9A-F]+-\d+$", "/query/{locator}", path)


async def _login(backend: Recorded, ca: PrivateCA) -> Salesforce:
    def connect() -> Salesforce:
        session = requests.Session()
        session.verify = str(ca.pem)
        session.trust_env = False  # REQUESTS_CA_BUNDLE or a proxy from the shell would win
        token = session.post(
            f"{backend.url}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": sandbox_crm.CLIENT_ID,
                "client_secret": sandbox_crm.CLIENT_SECRET,
            },
            timeout=5,
        ).json()
        return Salesforce(
            instance_url=token["instance_url"],
            session_id=token["access_token"],
            version=VERSION,
            session=session,
        )

    return await asyncio.to_thread(connect)


@pytest.fixture
async def sdk(recorded_backend: Backend, tmp_path: Path) -> tuple[Salesforce, Recorded]:
    ca = PrivateCA(tmp_path)
    backend = await recorded_backend(sandbox_crm.create_app(), _server_context(ca))
    return await _login(backend, ca), backend


async def test_simple_salesforce_queries_pages_and_writes_against_the_sandbox(
    sdk: tuple[Salesforce, Recorded],
) -> None:
    sf, backend = sdk
    first = await asyncio.to_thread(sf.query, "SELECT Id, Email FROM Contact")
    assert first["done"] is False and first["nextRecordsUrl"].startswith(
        f"/services/data/v{VERSION}/query/"
    )
    everything = await asyncio.to_thread(sf.query_all, "SELECT Id, Email FROM Contact")
    assert everything["totalSize"] == len(everything["records"]) > len(first["records"])
    assert len({r["Id"] for r in everything["records"]}) == everything["totalSize"]

    email = f"sdk-{uuid.uuid4().hex[:10]}@example.com"
    created = await asyncio.to_thread(
        sf.Contact.create, {"FirstName": "Ada", "LastName": "Lovelace", "Email": email}
    )
    assert created["success"] is True and created["errors"] == []
    record = await asyncio.to_thread(sf.Contact.get, created["id"])
    assert record["Email"] == email and record["attributes"]["type"] == "Contact"
    status = await asyncio.to_thread(sf.Contact.update, created["id"], {"Title": "Engineer"})
    assert status == 204
    found = await asyncio.to_thread(
        sf.query, f"SELECT Id, Title FROM Contact WHERE Email = '{email}'"
    )
    assert [r["Title"] for r in found["records"]] == ["Engineer"]

    sent = {(s.method, s.path) for s in backend.sent}
    assert ("GET", f"/services/data/v{VERSION}/query/") in sent  # the trailing-slash form
    assert ("POST", f"/services/data/v{VERSION}/sobjects/Contact/") in sent


async def test_simple_salesforce_reads_the_sandbox_errors_as_salesforce_errors(
    sdk: tuple[Salesforce, Recorded],
) -> None:
    sf, _ = sdk
    with pytest.raises(SalesforceResourceNotFound) as missing:
        await asyncio.to_thread(sf.Contact.get, "003TR0000099999")
    assert missing.value.content == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    ]
    with pytest.raises(SalesforceMalformedRequest) as invalid:
        await asyncio.to_thread(sf.Contact.create, {"FirstName": "No Last Name"})
    error: dict[str, Any] = invalid.value.content[0]
    assert error["errorCode"] == "REQUIRED_FIELD_MISSING" and "LastName" in error["fields"]
    with pytest.raises(SalesforceGeneralError) as wrong_method:
        await asyncio.to_thread(sf.Contact.delete, "003TR0000000001")
    assert wrong_method.value.status == 405
    assert wrong_method.value.content[0]["errorCode"] == "METHOD_NOT_ALLOWED"
    with pytest.raises(SalesforceResourceNotFound):
        await asyncio.to_thread(sf.NoSuchObject.get, "001TR0000000001")


async def test_our_client_sends_only_requests_simple_salesforce_sends(
    recorded_backend: Backend, tmp_path: Path
) -> None:
    ca = PrivateCA(tmp_path)
    backend = await recorded_backend(sandbox_crm.create_app(), _server_context(ca))
    sf = await _login(backend, ca)
    email = f"both-{uuid.uuid4().hex[:10]}@example.com"

    config = BackendConfig.model_validate(
        {
            "base_url": backend.url,
            "tls": {"ca_bundle": str(ca.pem)},
            "auth": {
                "kind": "oauth_client_credentials",
                "token_url": "/services/oauth2/token",
                "client_id": sandbox_crm.CLIENT_ID,
                "client_secret": sandbox_crm.CLIENT_SECRET,
            },
            "retry": {"max_attempts": 1},
        }
    )
    ours = CrmClient(config, base_url=backend.url)
    await ours.start()
    try:
        contact = await ours.create_contact(
            ContactCreate(email=email, first_name="Grace", last_name="Hopper")
        )
        assert (await ours.find_contact_by_email(email)) is not None
        await ours.get_contact(contact.id)
        await ours.update_contact(contact.id, {"title": "Rear Admiral"})
        page = await ours.contacts_page(None, 50)
        assert page.next_cursor is not None
        await ours.contacts_page(page.next_cursor, 50)
    finally:
        await ours.close()
    ours_sent = list(backend.sent)
    backend.sent.clear()

    def vendor_client_does_the_same() -> None:
        found = sf.query(f"SELECT Id FROM Contact WHERE Email = '{email}'")
        record_id = found["records"][0]["Id"]
        sf.Contact.get(record_id)
        sf.Contact.update(record_id, {"Title": "Rear Admiral"})
        sf.Contact.create({"LastName": "Other", "Email": f"o-{email}"})
        page = sf.query("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=50"})
        sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)

    await asyncio.to_thread(vendor_client_does_the_same)
    vendor_sent = list(backend.sent)

    vendor_forms = {(s.method, _template(s.path)) for s in vendor_sent}
    for s in ours_sent:
        if s.path == "/services/oauth2/token":
            continue
        assert (s.method, _template(s.path)) in vendor_forms, (s.method, s.path, vendor_forms)
        assert {k for k, _ in s.query} <= {"q"}, s.query
        assert s.headers.get("Authorization", "").startswith("Bearer ")
