"""CRM system API (Salesforce-like): SOQL queries with query locators, sObject REST, mapping.

Plain renames are the ``*_FIELDS`` tables (vendor -> canonical); picklist vocabularies, dates,
numbers and website/domain are converted in code. Anything unmappable is ``BadBackendData``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import BaseModel

from .client import BackendClient, BackendResponse
from .errors import BackendConflict, BackendError, BadBackendData
from .ids import CursorSyntax, IdSyntax
from .mapping import build_model
from .models import (
    Account,
    AccountCreate,
    Activity,
    Contact,
    ContactCreate,
    Lead,
    LeadStatus,
    Opportunity,
    OpportunityStage,
    Page,
)

BACKEND = "crm"
API = "/services/data/v60.0"
PAGE_SIZE = 2000  # the largest batch Salesforce hands out; fewest round trips when iterating

M = TypeVar("M", bound=BaseModel)

# --- vocabularies ---------------------------------------------------------------------------

CONTACT_FIELDS: dict[str, str] = {
    "Id": "id",
    "AccountId": "account_id",
    "Email": "email",
    "FirstName": "first_name",
    "LastName": "last_name",
    "Phone": "phone",
    "Title": "title",
    "ERP_Customer_Number__c": "erp_customer_number",
    "CreatedDate": "created_at",
}
ACCOUNT_FIELDS: dict[str, str] = {
    "Id": "id",
    "Name": "name",
    "Website": "domain",
    "Industry": "industry",
    "Customer_Status__c": "status",
    "ERP_Customer_Number__c": "erp_customer_number",
}
OPPORTUNITY_FIELDS: dict[str, str] = {
    "Id": "id",
    "AccountId": "account_id",
    "Primary_Contact__c": "contact_id",
    "Name": "name",
    "StageName": "stage",
    "Amount": "amount",
    "CloseDate": "close_date",
}
TASK_FIELDS: dict[str, str] = {
    "Id": "id",
    "Subject": "subject",
    "WhatId": "related_to_id",
    "WhoId": "contact_id",
    "Status": "status",
    "ActivityDate": "due_date",
    "Description": "description",
}
LEAD_FIELDS: dict[str, str] = {
    "Id": "id",
    "Email": "email",
    "FirstName": "first_name",
    "LastName": "last_name",
    "Company": "company",
    "Phone": "phone",
    "LeadSource": "source",
    "Status": "status",
    "Lead_Score__c": "score",
}

STAGE_FROM_VENDOR: dict[str, OpportunityStage] = {
    "Prospecting": OpportunityStage.PROSPECTING,
    "Qualification": OpportunityStage.QUALIFICATION,
    "Proposal/Price Quote": OpportunityStage.PROPOSAL,
    "Negotiation/Review": OpportunityStage.NEGOTIATION,
    "Closed Won": OpportunityStage.CLOSED_WON,
    "Closed Lost": OpportunityStage.CLOSED_LOST,
}
STAGE_TO_VENDOR = {v: k for k, v in STAGE_FROM_VENDOR.items()}

LEAD_STATUS_FROM_VENDOR: dict[str, LeadStatus] = {
    "Open - Not Contacted": LeadStatus.NEW,
    "Working - Contacted": LeadStatus.WORKING,
    "Qualified": LeadStatus.QUALIFIED,
    "Closed - Converted": LeadStatus.CONVERTED,
    "Closed - Not Converted": LeadStatus.DISQUALIFIED,
}
LEAD_STATUS_TO_VENDOR = {v: k for k, v in LEAD_STATUS_FROM_VENDOR.items()}

TASK_STATUS_FROM_VENDOR: dict[str, str] = {
    "Not Started": "not_started",
    "In Progress": "in_progress",
    "Completed": "completed",
    "Waiting on someone else": "waiting",
    "Deferred": "deferred",
}
TASK_STATUS_TO_VENDOR = {v: k for k, v in TASK_STATUS_FROM_VENDOR.items()}

# --- the vendor's id syntax -------------------------------------------------------------------
RECORD_ID = IdSyntax(BACKEND, "record", r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
"""Salesforce record ids: 15 case-sensitive characters, or 18 with the case-safe suffix."""
CURSOR = CursorSyntax(r"[A-Za-z0-9]{1,40}-[0-9]{1,9}")
"""A query locator, as the tail of ``nextRecordsUrl``: ``<query id>-<offset>``."""
_SOQL_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


# --- pure mapping ---------------------------------------------------------------------------


def soql_quote(value: str) -> str:
    """A SOQL string literal: every special character escaped, so values cannot inject."""
    return "'" + "".join(_SOQL_ESCAPES.get(ch, ch) for ch in value) + "'"


def soql(sobject: str, fields: Mapping[str, str], **where: str) -> str:
    """``SELECT <fields> FROM <sobject> [WHERE F = 'v' AND ...] ORDER BY Id``, values quoted."""
    text = f"SELECT {', '.join(fields)} FROM {sobject}"  # noqa: S608 - names are our constants
    if where:
        text += " WHERE " + " AND ".join(f"{f} = {soql_quote(v)}" for f, v in where.items())
    return text + " ORDER BY Id"


def _record_id(raw: Mapping[str, Any]) -> str | None:
    rid = raw.get("Id")
    return rid if isinstance(rid, str) else None


def _renamed(raw: Any, renames: Mapping[str, str], kind: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise BadBackendData(BACKEND, f"{kind} is not a JSON object")
    return {canon: raw.get(vendor) for vendor, canon in renames.items()}


def _sf_datetime(value: Any, rid: str | None, fld: str) -> datetime | None:
    """Salesforce datetimes look like ``2025-03-01T10:00:00.000+0000``."""
    if value is None:
        return None
    if isinstance(value, str):
        for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
            try:
                return datetime.strptime(value, fmt)
            except ValueError:
                continue
    raise BadBackendData(BACKEND, "not a Salesforce datetime", record=rid, field=fld)


def _sf_date(value: Any, rid: str | None, fld: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value) if isinstance(value, str) else _bad(rid, fld)
    except ValueError as exc:
        raise BadBackendData(BACKEND, "not an ISO date", record=rid, field=fld) from exc


def _sf_decimal(value: Any, rid: str | None, fld: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        _bad(rid, fld)
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise BadBackendData(BACKEND, "not a number", record=rid, field=fld) from exc


def _bad(rid: str | None, fld: str) -> Any:
    raise BadBackendData(BACKEND, "unexpected value type", record=rid, field=fld)


def _vocab(table: Mapping[str, Any], value: Any, rid: str | None, fld: str) -> Any:
    if not isinstance(value, str) or value not in table:
        raise BadBackendData(BACKEND, f"unknown {fld} value {value!r}", record=rid, field=fld)
    return table[value]


def domain_from_website(website: str | None) -> str | None:
    """``https://www.acme.com/`` -> ``acme.com``: Salesforce keeps whatever a user typed."""
    if not website:
        return None
    host = re.sub(r"^[a-z]+://", "", website.strip().lower()).split("/")[0]
    return host.removeprefix("www.") or None


def contact_from_vendor(raw: Any) -> Contact:
    data = _renamed(raw, CONTACT_FIELDS, "Contact")
    rid = _record_id(raw)
    data["created_at"] = _sf_datetime(data["created_at"], rid, "CreatedDate")
    return build_model(BACKEND, Contact, data, rid, CONTACT_FIELDS)


def contact_to_vendor(contact: Contact | ContactCreate | Mapping[str, Any]) -> dict[str, Any]:
    """Canonical (or a partial dict of canonical fields) to a Contact body; the CRM owns Id."""
    values = contact if isinstance(contact, Mapping) else contact.model_dump(exclude_unset=True)
    return _to_vendor(values, CONTACT_FIELDS, exclude=("Id", "CreatedDate"))


def _to_vendor(
    values: Mapping[str, Any], renames: Mapping[str, str], exclude: tuple[str, ...] = ("Id",)
) -> dict[str, Any]:
    back = {c: v for v, c in renames.items() if v not in exclude}
    unknown = sorted(set(values) - set(back) - {c for v, c in renames.items() if v in exclude})
    if unknown:
        raise ValueError(f"not writable CRM fields: {', '.join(unknown)}")
    return {back[k]: v for k, v in values.items() if k in back}


def account_from_vendor(raw: Any) -> Account:
    data = _renamed(raw, ACCOUNT_FIELDS, "Account")
    rid = _record_id(raw)
    if data["domain"] is not None and not isinstance(data["domain"], str):
        _bad(rid, "Website")
    data["domain"] = domain_from_website(data["domain"])
    return build_model(BACKEND, Account, data, rid, ACCOUNT_FIELDS)


def account_to_vendor(account: Account | AccountCreate) -> dict[str, Any]:
    return _to_vendor(account.model_dump(exclude={"id"}, exclude_unset=True), ACCOUNT_FIELDS)


def opportunity_from_vendor(raw: Any) -> Opportunity:
    data = _renamed(raw, OPPORTUNITY_FIELDS, "Opportunity")
    rid = _record_id(raw)
    data["stage"] = _vocab(STAGE_FROM_VENDOR, data["stage"], rid, "StageName")
    data["amount"] = _sf_decimal(data["amount"], rid, "Amount")
    data["close_date"] = _sf_date(data["close_date"], rid, "CloseDate")
    return build_model(BACKEND, Opportunity, data, rid, OPPORTUNITY_FIELDS)


def task_from_vendor(raw: Any) -> Activity:
    data = _renamed(raw, TASK_FIELDS, "Task")
    rid = _record_id(raw)
    data["status"] = _vocab(TASK_STATUS_FROM_VENDOR, data["status"], rid, "Status")
    data["due_date"] = _sf_date(data["due_date"], rid, "ActivityDate")
    return build_model(BACKEND, Activity, data, rid, TASK_FIELDS)


def task_to_vendor(activity: Activity) -> dict[str, Any]:
    body = _to_vendor(activity.model_dump(exclude={"id"}), TASK_FIELDS)
    # An unknown status is sent as is: the CRM's restricted picklist rejects it with its reason.
    body["Status"] = TASK_STATUS_TO_VENDOR.get(activity.status, activity.status)
    if activity.due_date is not None:
        body["ActivityDate"] = activity.due_date.isoformat()
    return body


def lead_from_vendor(raw: Any) -> Lead:
    data = _renamed(raw, LEAD_FIELDS, "Lead")
    rid = _record_id(raw)
    data["status"] = _vocab(LEAD_STATUS_FROM_VENDOR, data["status"], rid, "Status")
    score = data["score"]
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score != int(score):
            _bad(rid, "Lead_Score__c")
        data["score"] = int(score)
    return build_model(BACKEND, Lead, data, rid, LEAD_FIELDS)


def lead_to_vendor(lead: Lead) -> dict[str, Any]:
    body = _to_vendor(lead.model_dump(exclude={"id"}), LEAD_FIELDS)
    body["Status"] = LEAD_STATUS_TO_VENDOR[lead.status]
    # Salesforce requires a Company on every lead; web-to-lead fills in this placeholder too.
    body["Company"] = lead.company or "[not provided]"
    return body


# --- client ---------------------------------------------------------------------------------


class CrmClient(BackendClient):
    """Typed access to the CRM; ids are Salesforce's 15/18-character record ids."""

    name = "crm"
    id_syntax = RECORD_ID
    cursor_syntax = CURSOR

    # Salesforce answers every refusal 400 with an errorCode; a duplicate is a conflict to us.
    def _client_error(self, resp: BackendResponse) -> BackendError:
        err = super()._client_error(resp)
        if resp.status == 400 and b"DUPLICATES_DETECTED" in resp.body:
            return BackendConflict(self.name, err.detail)
        return err

    # --- generic plumbing ---------------------------------------------------------------

    async def _get_record(self, sobject: str, record_id: str) -> dict[str, Any]:
        RECORD_ID(record_id)
        return (await self.request("GET", f"{API}/sobjects/{sobject}/{record_id}")).json_object()

    async def _create(self, sobject: str, body: dict[str, Any]) -> str:
        data = (await self.request("POST", f"{API}/sobjects/{sobject}", json=body)).json_object()
        new_id = data.get("id")
        if not isinstance(new_id, str) or data.get("success") is not True:
            raise BadBackendData(self.name, f"create {sobject} answered no id", field="id")
        return new_id

    async def _patch(self, sobject: str, record_id: str, body: dict[str, Any]) -> None:
        RECORD_ID(record_id)
        await self.request("PATCH", f"{API}/sobjects/{sobject}/{record_id}", json=body)

    async def _query_page(
        self, query: str | None, locator: str | None, batch: int
    ) -> tuple[list[Any], str | None]:
        """One batch of a query, and the locator of the next (None when done)."""
        headers = {"Sforce-Query-Options": f"batchSize={batch}"}
        if locator is None:
            resp = await self.request(
                "GET", f"{API}/query", params={"q": query or ""}, headers=headers
            )
        else:
            CURSOR(locator)
            resp = await self.request("GET", f"{API}/query/{locator}", headers=headers)
        data = resp.json_object()
        records = data.get("records")
        if not isinstance(records, list):
            raise BadBackendData(self.name, "query answer has no records list", field="records")
        if data.get("done") is True:
            return records, None
        next_url = data.get("nextRecordsUrl")
        if not isinstance(next_url, str) or "/query/" not in next_url:
            raise BadBackendData(
                self.name, "query not done but no nextRecordsUrl", field="nextRecordsUrl"
            )
        return records, next_url.rsplit("/query/", 1)[1]

    async def _query_all(self, query: str) -> AsyncIterator[Any]:
        records, locator = await self._query_page(query, None, PAGE_SIZE)
        while True:
            for rec in records:
                yield rec
            if locator is None:
                return
            records, locator = await self._query_page(None, locator, PAGE_SIZE)

    async def _query_first(self, query: str) -> Any | None:
        records, _ = await self._query_page(query, None, 1)
        return records[0] if records else None

    # --- contacts -----------------------------------------------------------------------

    async def get_contact(self, contact_id: str) -> Contact:
        return contact_from_vendor(await self._get_record("Contact", contact_id))

    async def find_contact_by_email(self, email: str) -> Contact | None:
        raw = await self._query_first(soql("Contact", CONTACT_FIELDS, Email=email))
        return None if raw is None else contact_from_vendor(raw)

    async def iter_contacts(self) -> AsyncIterator[Contact]:
        async for raw in self._query_all(soql("Contact", CONTACT_FIELDS)):
            yield contact_from_vendor(raw)

    async def contacts_page(self, cursor: str | None, limit: int) -> Page[Contact]:
        """A page of contacts; the cursor is Salesforce's query locator (400 if malformed)."""
        query = None if cursor else soql("Contact", CONTACT_FIELDS)
        records, locator = await self._query_page(query, cursor, limit)
        return Page[Contact](items=[contact_from_vendor(r) for r in records], next_cursor=locator)

    async def create_contact(self, new: ContactCreate) -> Contact:
        """Create and read back; an existing email is ``BackendConflict`` (DUPLICATES_DETECTED)."""
        return await self.get_contact(await self._create("Contact", contact_to_vendor(new)))

    async def update_contact(self, contact_id: str, changes: Mapping[str, Any]) -> Contact:
        """Apply canonical field changes (``ValueError`` for unknown or read-only ones)."""
        await self._patch("Contact", contact_id, contact_to_vendor(changes))
        return await self.get_contact(contact_id)

    # --- accounts -----------------------------------------------------------------------

    async def get_account(self, account_id: str) -> Account:
        return account_from_vendor(await self._get_record("Account", account_id))

    async def find_account_by_domain(self, domain: str) -> Account | None:
        wanted = domain_from_website(domain) or domain
        raw = await self._query_first(soql("Account", ACCOUNT_FIELDS, Website=wanted))
        return None if raw is None else account_from_vendor(raw)

    async def create_account(self, new: AccountCreate) -> Account:
        return await self.get_account(await self._create("Account", account_to_vendor(new)))

    async def set_account_status(self, account_id: str, status: str) -> None:
        """Set the account's customer status (``Customer_Status__c``)."""
        RECORD_ID(account_id)
        body = _to_vendor({"status": status}, ACCOUNT_FIELDS)
        await self.request("PATCH", f"{API}/sobjects/Account/{account_id}", json=body)

    # --- opportunities ------------------------------------------------------------------

    async def iter_opportunities(self, account_id: str | None = None) -> AsyncIterator[Opportunity]:
        where = {} if account_id is None else {"AccountId": account_id}
        async for raw in self._query_all(soql("Opportunity", OPPORTUNITY_FIELDS, **where)):
            yield opportunity_from_vendor(raw)

    async def get_opportunity(self, opportunity_id: str) -> Opportunity:
        return opportunity_from_vendor(await self._get_record("Opportunity", opportunity_id))

    async def set_opportunity_stage(
        self, opportunity_id: str, stage: OpportunityStage
    ) -> Opportunity:
        await self._patch("Opportunity", opportunity_id, {"StageName": STAGE_TO_VENDOR[stage]})
        return await self.get_opportunity(opportunity_id)

    # --- tasks --------------------------------------------------------------------------

    async def create_task(self, activity: Activity) -> Activity:
        new_id = await self._create("Task", task_to_vendor(activity))
        return task_from_vendor(await self._get_record("Task", new_id))

    async def iter_tasks(self, contact_id: str) -> AsyncIterator[Activity]:
        async for raw in self._query_all(soql("Task", TASK_FIELDS, WhoId=contact_id)):
            yield task_from_vendor(raw)

    # --- leads --------------------------------------------------------------------------

    async def create_lead(self, lead: Lead) -> Lead:
        """Create and read back; an existing email is ``BackendConflict`` (DUPLICATES_DETECTED)."""
        new_id = await self._create("Lead", lead_to_vendor(lead))
        return lead_from_vendor(await self._get_record("Lead", new_id))

    async def find_lead_by_email(self, email: str) -> Lead | None:
        raw = await self._query_first(soql("Lead", LEAD_FIELDS, Email=email))
        return None if raw is None else lead_from_vendor(raw)

    async def set_lead_status(self, lead_id: str, status: LeadStatus) -> Lead:
        await self._patch("Lead", lead_id, {"Status": LEAD_STATUS_TO_VENDOR[status]})
        return lead_from_vendor(await self._get_record("Lead", lead_id))
