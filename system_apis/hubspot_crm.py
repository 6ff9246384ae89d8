"""CRM system API on HubSpot: CRM v3 objects, cursor paging, search, v4 associations, mapping.

The same public interface and canonical models as the Salesforce CRM client (``crm.py``):
contacts are HubSpot contacts, accounts companies, opportunities deals of the default
pipeline, activities tasks. HubSpot has no separate lead record in this mapping: a lead is a
contact whose ``lifecyclestage`` is still a lead stage (subscriber to sales qualified lead), its
status ``hs_lead_status``; a contact in a later stage (or none) is a customer contact.

Links between records (a contact's company, a deal's company and contact, a task's contact and
company) are HubSpot associations, read with the record (``?associations=``) or in one batch
per page (the v4 batch read), and written with the record on create.

Plain renames are the ``*_FIELDS`` tables (HubSpot property -> canonical); HubSpot answers
every property as a string, so numbers, dates and vocabularies are converted in code. Anything
unmappable is ``BadBackendData``. Every call goes through ``BackendClient``: timeouts, retries
honouring ``Retry-After`` (a 429 is retried, even for a create), the breaker and the pacer at
the account's rolling limit; the search endpoints have a pacer of their own at their lower
per-second limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from .client import BackendClient
from .config import BackendConfig, VendorRateLimit
from .crm import domain_from_website
from .errors import BadBackendData
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
from .pagination import walk_pages
from .resilience import OutboundPacer, OutboundQueueFull

__all__ = ["AccountCreate", "ContactCreate", "HubSpotCrmClient"]

BACKEND = "hubspot-crm"
OBJECTS = "/crm/v3/objects"
ASSOCIATIONS = "/crm/v4/associations"
LIST_LIMIT = 100  # the most a list page holds
SEARCH_LIMIT = 200  # the most a search page holds
SEARCH_MAX_RESULTS = 10_000  # a search pages no further than this
SEARCH_PER_SECOND = 4.0
"""Below the search endpoints' five calls a second, spaced evenly (a burst of one): a rolling
one-second window never sees more than five."""
PIPELINE = "default"

# --- vocabularies ---------------------------------------------------------------------------

CONTACT_FIELDS: dict[str, str] = {
    "email": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "phone": "phone",
    "jobtitle": "title",
    "erp_customer_number": "erp_customer_number",
}
ACCOUNT_FIELDS: dict[str, str] = {
    "name": "name",
    "domain": "domain",
    "industry": "industry",
    "customer_status": "status",
    "erp_customer_number": "erp_customer_number",
}
DEAL_FIELDS: dict[str, str] = {
    "dealname": "name",
    "dealstage": "stage",
    "amount": "amount",
    "closedate": "close_date",
    "deal_currency_code": "currency",
}
TASK_FIELDS: dict[str, str] = {
    "hs_task_subject": "subject",
    "hs_task_status": "status",
    "hs_timestamp": "due_date",
    "hs_task_body": "description",
}
LEAD_FIELDS: dict[str, str] = {
    "email": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "company": "company",
    "phone": "phone",
    "lead_source": "source",
    "hubspotscore": "score",
}
CONTACT_PROPERTIES = (*CONTACT_FIELDS, "createdate", "lifecyclestage")
LEAD_PROPERTIES = (*LEAD_FIELDS, "lifecyclestage", "hs_lead_status")

STAGE_FROM_VENDOR: dict[str, OpportunityStage] = {
    "appointmentscheduled": OpportunityStage.PROSPECTING,
    "qualifiedtobuy": OpportunityStage.QUALIFICATION,
    "presentationscheduled": OpportunityStage.PROPOSAL,
    "decisionmakerboughtin": OpportunityStage.NEGOTIATION,
    "contractsent": OpportunityStage.NEGOTIATION,
    "closedwon": OpportunityStage.CLOSED_WON,
    "closedlost": OpportunityStage.CLOSED_LOST,
}
"""The default pipeline's stages; "contract sent" is still a negotiation to the canonical model."""
STAGE_TO_VENDOR: dict[OpportunityStage, str] = {
    OpportunityStage.PROSPECTING: "appointmentscheduled",
    OpportunityStage.QUALIFICATION: "qualifiedtobuy",
    OpportunityStage.PROPOSAL: "presentationscheduled",
    OpportunityStage.NEGOTIATION: "decisionmakerboughtin",
    OpportunityStage.CLOSED_WON: "closedwon",
    OpportunityStage.CLOSED_LOST: "closedlost",
}

LEAD_STAGES = frozenset({"subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead"})
"""Lifecycle stages of a contact that is still a lead."""
CONVERTED_STAGE = "opportunity"
CUSTOMER_STAGE = "customer"
"""The stage a contact is created in: explicit, so an account's default stage for new contacts
(often ``lead``) cannot make a customer contact a lead."""
LEAD_STATUS_FROM_VENDOR: dict[str, LeadStatus] = {
    "NEW": LeadStatus.NEW,
    "OPEN": LeadStatus.NEW,
    "ATTEMPTED_TO_CONTACT": LeadStatus.WORKING,
    "CONNECTED": LeadStatus.WORKING,
    "IN_PROGRESS": LeadStatus.WORKING,
    "OPEN_DEAL": LeadStatus.QUALIFIED,
    "UNQUALIFIED": LeadStatus.DISQUALIFIED,
    "BAD_TIMING": LeadStatus.DISQUALIFIED,
}
LEAD_STATUS_TO_VENDOR: dict[LeadStatus, str] = {
    LeadStatus.NEW: "NEW",
    LeadStatus.WORKING: "IN_PROGRESS",
    LeadStatus.QUALIFIED: "OPEN_DEAL",
    LeadStatus.DISQUALIFIED: "UNQUALIFIED",
}
"""A converted lead has no lead status: it is a contact in the ``opportunity`` stage."""

TASK_STATUS_FROM_VENDOR: dict[str, str] = {
    "NOT_STARTED": "not_started",
    "IN_PROGRESS": "in_progress",
    "COMPLETED": "completed",
    "WAITING": "waiting",
    "DEFERRED": "deferred",
}
TASK_STATUS_TO_VENDOR = {v: k for k, v in TASK_STATUS_FROM_VENDOR.items()}

INDUSTRY_FROM_VENDOR: dict[str, str] = {
    "MECHANICAL_OR_INDUSTRIAL_ENGINEERING": "Manufacturing",
    "RETAIL": "Retail",
    "COMPUTER_SOFTWARE": "Software",
    "LOGISTICS_AND_SUPPLY_CHAIN": "Logistics",
    "HOSPITAL_HEALTH_CARE": "Healthcare",
    "FINANCIAL_SERVICES": "Finance",
}
"""HubSpot's ``industry`` enumeration values for the canonical industries; another value is
shown in words (``INFORMATION_TECHNOLOGY_AND_SERVICES`` -> "Information Technology And
Services")."""
INDUSTRY_TO_VENDOR = {v: k for k, v in INDUSTRY_FROM_VENDOR.items()}

# Association type ids HubSpot defines (HUBSPOT_DEFINED category).
CONTACT_TO_COMPANY = 279
CONTACT_TO_PRIMARY_COMPANY = 1
DEAL_TO_PRIMARY_COMPANY = 5
TASK_TO_CONTACT = 204
TASK_TO_COMPANY = 192
PRIMARY_COMPANY = frozenset({CONTACT_TO_PRIMARY_COMPANY, DEAL_TO_PRIMARY_COMPANY})

# --- the vendor's id syntax -------------------------------------------------------------------
RECORD_ID = IdSyntax(BACKEND, "record", r"[1-9][0-9]{0,18}")
"""HubSpot record ids: positive integers, sent and answered as strings."""
AFTER = CursorSyntax(r"[A-Za-z0-9_=-]{1,512}")
"""A ``paging.next.after`` token: an id or an opaque URL-safe token."""


# --- pure mapping ---------------------------------------------------------------------------


def _bad(detail: str, record: str | None, fld: str) -> BadBackendData:
    return BadBackendData(BACKEND, detail, record=record, field=fld)


def _record(raw: Any, kind: str) -> tuple[str, dict[str, Any]]:
    """A v3 object's id and properties, or ``BadBackendData``."""
    if not isinstance(raw, Mapping):
        raise BadBackendData(BACKEND, f"{kind} is not a JSON object")
    rid = raw.get("id")
    if not isinstance(rid, str) or not RECORD_ID.matches(rid):
        raise _bad(f"{kind} has no valid id", None, "id")
    props = raw.get("properties")
    if not isinstance(props, Mapping):
        raise _bad(f"{kind} has no properties object", rid, "properties")
    return rid, dict(props)


def _renamed(props: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    return {canon: props.get(vendor) for vendor, canon in renames.items()}


def _text(value: Any, rid: str, fld: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad("HubSpot properties are strings", rid, fld)
    return value


def hs_datetime(value: Any, rid: str, fld: str) -> datetime | None:
    """HubSpot instants look like ``2025-03-01T10:15:00.000Z`` (a date alone is midnight UTC)."""
    text = _text(value, rid, fld)
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad("not an ISO instant", rid, fld) from exc
    if parsed.tzinfo is None:
        raise _bad("an instant without a time zone", rid, fld)
    return parsed.astimezone(UTC)


def hs_date(value: Any, rid: str, fld: str) -> date | None:
    instant = hs_datetime(value, rid, fld)
    return None if instant is None else instant.date()


def hs_decimal(value: Any, rid: str, fld: str) -> Decimal | None:
    text = _text(value, rid, fld)
    if text is None:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise _bad("not a number", rid, fld) from exc
    if not number.is_finite():
        raise _bad("not a finite number", rid, fld)
    return number


def date_to_vendor(day: date) -> str:
    """A date as HubSpot's date-time properties take it: midnight UTC, in milliseconds."""
    return str(int(datetime.combine(day, time(), UTC).timestamp() * 1000))


def _vocab(table: Mapping[str, Any], value: Any, rid: str, fld: str) -> Any:
    if not isinstance(value, str) or value not in table:
        raise _bad(f"unknown {fld} value {value!r}", rid, fld)
    return table[value]


def industry_from_vendor(value: str | None) -> str | None:
    if value is None:
        return None
    return INDUSTRY_FROM_VENDOR.get(value) or value.replace("_", " ").title()


def _writable(
    values: Mapping[str, Any], renames: Mapping[str, str], read_only: Sequence[str] = ()
) -> dict[str, Any]:
    back = {c: v for v, c in renames.items() if v not in read_only}
    unknown = sorted(set(values) - set(back))
    if unknown:
        raise ValueError(f"not writable CRM fields: {', '.join(unknown)}")
    return {back[k]: v for k, v in values.items()}


def contact_from_vendor(raw: Any, account_id: str | None = None) -> Contact:
    rid, props = _record(raw, "contact")
    data = _renamed(props, CONTACT_FIELDS)
    for canon, vendor in (("phone", "phone"), ("title", "jobtitle")):
        data[canon] = _text(data[canon], rid, vendor)
    data["id"] = rid
    data["account_id"] = account_id
    data["created_at"] = hs_datetime(props.get("createdate"), rid, "createdate")
    return build_model(BACKEND, Contact, data, rid, CONTACT_FIELDS)


def contact_to_vendor(contact: Contact | ContactCreate | Mapping[str, Any]) -> dict[str, Any]:
    """Canonical fields (or a partial dict of them) to contact properties; HubSpot owns the id
    and the creation date, and the company is an association, not a property."""
    values = dict(
        contact if isinstance(contact, Mapping) else contact.model_dump(exclude_unset=True)
    )
    for owned in ("id", "created_at"):
        values.pop(owned, None)
    values.pop("account_id", None)
    return _writable(values, CONTACT_FIELDS)


def account_from_vendor(raw: Any) -> Account:
    rid, props = _record(raw, "company")
    data = _renamed(props, ACCOUNT_FIELDS)
    data["id"] = rid
    domain = _text(data["domain"], rid, "domain")
    data["domain"] = domain_from_website(domain)
    data["industry"] = industry_from_vendor(_text(data["industry"], rid, "industry"))
    return build_model(BACKEND, Account, data, rid, ACCOUNT_FIELDS)


def account_to_vendor(account: Account | AccountCreate) -> dict[str, Any]:
    body = _writable(account.model_dump(exclude={"id"}, exclude_unset=True), ACCOUNT_FIELDS)
    if body.get("industry") is not None:
        # An industry outside the table is sent as is: HubSpot's enumeration refuses it.
        body["industry"] = INDUSTRY_TO_VENDOR.get(body["industry"], body["industry"])
    if body.get("domain") is not None:
        body["domain"] = domain_from_website(body["domain"])
    return body


def opportunity_from_vendor(
    raw: Any, account_id: str | None = None, contact_id: str | None = None
) -> Opportunity:
    rid, props = _record(raw, "deal")
    data = _renamed(props, DEAL_FIELDS)
    data["id"] = rid
    data["stage"] = _vocab(STAGE_FROM_VENDOR, data["stage"], rid, "dealstage")
    data["amount"] = hs_decimal(data["amount"], rid, "amount")
    data["close_date"] = hs_date(data["close_date"], rid, "closedate")
    data["currency"] = _text(data["currency"], rid, "deal_currency_code") or "USD"
    data["account_id"] = account_id
    data["contact_id"] = contact_id
    return build_model(BACKEND, Opportunity, data, rid, DEAL_FIELDS)


def task_from_vendor(
    raw: Any, contact_id: str | None = None, related_to_id: str | None = None
) -> Activity:
    rid, props = _record(raw, "task")
    data = _renamed(props, TASK_FIELDS)
    data["id"] = rid
    data["status"] = _vocab(TASK_STATUS_FROM_VENDOR, data["status"], rid, "hs_task_status")
    data["due_date"] = hs_date(data["due_date"], rid, "hs_timestamp")
    data["description"] = _text(data["description"], rid, "hs_task_body")
    data["contact_id"] = contact_id
    data["related_to_id"] = related_to_id
    return build_model(BACKEND, Activity, data, rid, TASK_FIELDS)


def task_to_vendor(activity: Activity, today: date | None = None) -> dict[str, Any]:
    """Task properties; HubSpot requires ``hs_timestamp``: the due date, else today."""
    # An unknown status is sent as is: HubSpot's enumeration refuses it with its reason.
    return {
        "hs_task_subject": activity.subject,
        "hs_task_body": activity.description,
        "hs_task_status": TASK_STATUS_TO_VENDOR.get(activity.status, activity.status),
        "hs_timestamp": date_to_vendor(activity.due_date or today or datetime.now(UTC).date()),
    }


def is_lead(props: Mapping[str, Any]) -> bool:
    return props.get("lifecyclestage") in LEAD_STAGES


def lead_from_vendor(raw: Any) -> Lead:
    rid, props = _record(raw, "contact")
    data = _renamed(props, LEAD_FIELDS)
    data["id"] = rid
    for canon, vendor in (("company", "company"), ("phone", "phone"), ("source", "lead_source")):
        data[canon] = _text(data[canon], rid, vendor)
    stage = props.get("lifecyclestage")
    raw_status = props.get("hs_lead_status")
    if stage is not None and stage not in LEAD_STAGES:
        data["status"] = LeadStatus.CONVERTED
    elif raw_status in (None, ""):
        data["status"] = LeadStatus.NEW
    else:
        data["status"] = _vocab(LEAD_STATUS_FROM_VENDOR, raw_status, rid, "hs_lead_status")
    score = hs_decimal(data["score"], rid, "hubspotscore")
    if score is not None and score != score.to_integral_value():
        raise _bad("not a whole number", rid, "hubspotscore")
    data["score"] = None if score is None else int(score)
    return build_model(BACKEND, Lead, data, rid, LEAD_FIELDS)


def lead_status_to_vendor(status: LeadStatus) -> dict[str, str]:
    if status is LeadStatus.CONVERTED:
        return {"lifecyclestage": CONVERTED_STAGE}
    return {"hs_lead_status": LEAD_STATUS_TO_VENDOR[status]}


def lead_to_vendor(lead: Lead) -> dict[str, Any]:
    """Contact properties of a new lead; its score is HubSpot's to compute (read-only)."""
    values = lead.model_dump(exclude={"id", "status", "score"})
    body = _writable(values, LEAD_FIELDS, read_only=("hubspotscore",))
    body = {k: v for k, v in body.items() if v is not None}
    body["lifecyclestage"] = "lead"
    if lead.status is LeadStatus.CONVERTED:
        body["lifecyclestage"] = CONVERTED_STAGE
    else:
        body["hs_lead_status"] = LEAD_STATUS_TO_VENDOR[lead.status]
    return body


def association(to_id: str, type_id: int) -> dict[str, Any]:
    """One entry of a create body's ``associations``."""
    return {
        "to": {"id": to_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


def associated_ids(raw: Mapping[str, Any], to_type: str) -> list[tuple[str, bool]]:
    """``(id, primary)`` of a v3 object's ``associations.<to_type>.results``, in order."""
    block = raw.get("associations")
    if block is None:
        return []
    rid = raw.get("id") if isinstance(raw.get("id"), str) else None
    results = block.get(to_type, {}).get("results") if isinstance(block, Mapping) else None
    if results is None:
        return []
    if not isinstance(results, list):
        raise _bad("associations results are not a list", rid, f"associations.{to_type}")
    out: list[tuple[str, bool]] = []
    for item in results:
        oid = item.get("id") if isinstance(item, Mapping) else None
        kind = item.get("type") if isinstance(item, Mapping) else None
        if not isinstance(oid, str) or not isinstance(kind, str):
            raise _bad("association without id or type", rid, f"associations.{to_type}")
        out.append((oid, not kind.endswith("_unlabeled")))
    return out


def pick(found: Sequence[tuple[str, bool]]) -> str | None:
    """The primary association's id if there is one, else the first."""
    return next((oid for oid, primary in found if primary), found[0][0] if found else None)


def batch_associations(body: Mapping[str, Any]) -> dict[str, list[tuple[str, bool]]]:
    """A v4 batch read answer: each source id's ``(target id, primary)``; a source with no
    associations is absent (HubSpot lists it among ``errors``)."""
    results = body.get("results")
    if not isinstance(results, list):
        raise _bad("batch answer has no results list", None, "results")
    out: dict[str, list[tuple[str, bool]]] = {}
    for item in results:
        src = item.get("from", {}).get("id") if isinstance(item, Mapping) else None
        targets = item.get("to") if isinstance(item, Mapping) else None
        if not isinstance(src, str) or not isinstance(targets, list):
            raise _bad("batch result without from.id or to", None, "results")
        found: list[tuple[str, bool]] = []
        for t in targets:
            oid = t.get("toObjectId") if isinstance(t, Mapping) else None
            types = t.get("associationTypes") if isinstance(t, Mapping) else None
            if (
                isinstance(oid, bool)
                or not isinstance(oid, int | str)
                or not isinstance(types, list)
            ):
                raise _bad("association without toObjectId", src, "toObjectId")
            primary = any(
                isinstance(x, Mapping) and x.get("typeId") in PRIMARY_COMPANY for x in types
            )
            found.append((str(oid), primary))
        out[src] = found
    return out


def next_after(body: Mapping[str, Any]) -> str | None:
    """``paging.next.after``, None on the last page."""
    paging = body.get("paging")
    if paging is None:
        return None
    nxt = paging.get("next") if isinstance(paging, Mapping) else None
    if nxt is None:
        return None
    after = nxt.get("after") if isinstance(nxt, Mapping) else None
    if not isinstance(after, str) or not after:
        raise _bad("missing or not a string", None, "paging.next.after")
    return after


def results_of(body: Mapping[str, Any]) -> list[Any]:
    results = body.get("results")
    if not isinstance(results, list):
        raise _bad("answer has no results list", None, "results")
    return results


def eq(name: str, value: str) -> dict[str, str]:
    return {"propertyName": name, "operator": "EQ", "value": value}


# --- client ---------------------------------------------------------------------------------


class HubSpotCrmClient(BackendClient):
    """Typed access to HubSpot's CRM; ids are HubSpot's numeric record ids (as strings)."""

    name = BACKEND
    id_syntax = RECORD_ID
    cursor_syntax = AFTER

    def __init__(self, config: BackendConfig, base_url: str, name: str | None = None) -> None:
        super().__init__(config, base_url, name)
        self.search_pacer = OutboundPacer(
            VendorRateLimit(rate=SEARCH_PER_SECOND, period_s=1.0, burst=1)
        )

    # --- generic plumbing ---------------------------------------------------------------

    async def _get(
        self, kind: str, record_id: str, properties: Sequence[str], associations: str = ""
    ) -> dict[str, Any]:
        params: dict[str, str | int] = {"properties": ",".join(properties)}
        if associations:
            params["associations"] = associations
        path = f"{OBJECTS}/{kind}/{RECORD_ID(record_id)}"
        return (await self.request("GET", path, params=params)).json_object()

    async def _create(
        self, kind: str, properties: dict[str, Any], associations: Sequence[dict[str, Any]] = ()
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"properties": properties}
        if associations:
            body["associations"] = list(associations)
        return (await self.request("POST", f"{OBJECTS}/{kind}", json=body)).json_object()

    async def _patch(self, kind: str, record_id: str, properties: dict[str, Any]) -> None:
        path = f"{OBJECTS}/{kind}/{RECORD_ID(record_id)}"
        await self.request("PATCH", path, json={"properties": properties})

    async def _search(
        self,
        kind: str,
        filters: list[dict[str, Any]],
        properties: Sequence[str],
        after: str | None = None,
        limit: int = SEARCH_LIMIT,
    ) -> tuple[list[Any], str | None, int]:
        """One page of a search and the total of matches, paced to the search endpoints' own
        limit."""
        if not await self.search_pacer.acquire(timeout_s=self.config.timeouts.total_s):
            raise OutboundQueueFull(self.name, "search rate limit queue is full")
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "properties": list(properties),
            "limit": limit,
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        }
        if after is not None:
            body["after"] = after
        data = (await self.request("POST", f"{OBJECTS}/{kind}/search", json=body)).json_object()
        total = data.get("total")
        if isinstance(total, bool) or not isinstance(total, int):
            raise _bad("search answer has no total", None, "total")
        return results_of(data), next_after(data), total

    async def _search_all(
        self, kind: str, filters: list[dict[str, Any]], properties: Sequence[str]
    ) -> AsyncIterator[list[Any]]:
        """Every page of a search (HubSpot stops a search at 10,000 results)."""
        after: str | None = None
        while True:
            results, after, total = await self._search(kind, filters, properties, after)
            if total > SEARCH_MAX_RESULTS:  # the rest could never be read: fail, not truncate
                raise BadBackendData(
                    self.name, f"{total} {kind} match, more than a search can page through"
                )
            yield results
            if after is None:
                return

    async def _linked(
        self, kind: str, to: str, ids: Sequence[str]
    ) -> dict[str, list[tuple[str, bool]]]:
        """Associations of many records in one v4 batch read."""
        if not ids:
            return {}
        path = f"{ASSOCIATIONS}/{kind}/{to}/batch/read"
        resp = await self.request("POST", path, json={"inputs": [{"id": i} for i in ids]})
        return batch_associations(resp.json_object())

    async def _first_match(
        self, kind: str, filters: list[dict[str, Any]], properties: Sequence[str]
    ) -> list[Any]:
        results, _, _ = await self._search(kind, filters, properties, limit=10)
        return results

    # --- contacts -----------------------------------------------------------------------

    async def get_contact(self, contact_id: str) -> Contact:
        raw = await self._get("contacts", contact_id, CONTACT_PROPERTIES, "companies")
        return contact_from_vendor(raw, pick(associated_ids(raw, "companies")))

    async def find_contact_by_email(self, email: str) -> Contact | None:
        """The customer contact with this email (a contact still in a lead stage is a lead)."""
        hits = await self._first_match("contacts", [eq("email", email)], CONTACT_PROPERTIES)
        for raw in hits:
            rid, props = _record(raw, "contact")
            if not is_lead(props):
                companies = await self._linked("contacts", "companies", [rid])
                return contact_from_vendor(raw, pick(companies.get(rid, [])))
        return None

    async def contacts_page(self, cursor: str | None, limit: int) -> Page[Contact]:
        """A page of contacts; the cursor is HubSpot's ``after`` (400 if malformed)."""
        params: dict[str, str | int] = {
            "limit": max(1, min(limit, LIST_LIMIT)),
            "properties": ",".join(CONTACT_PROPERTIES),
            "associations": "companies",
        }
        after = AFTER(cursor)
        if after is not None:
            params["after"] = after
        data = (await self.request("GET", f"{OBJECTS}/contacts", params=params)).json_object()
        items = [  # a contact still in a lead stage is a lead: not in the list of contacts
            contact_from_vendor(raw, pick(associated_ids(raw, "companies")))
            for raw in results_of(data)
            if not is_lead(_record(raw, "contact")[1])
        ]
        return Page[Contact](items=items, next_cursor=next_after(data))

    async def iter_contacts(self) -> AsyncIterator[Contact]:
        async for contact in walk_pages(
            self.name, lambda cursor: self.contacts_page(cursor, LIST_LIMIT)
        ):
            yield contact

    async def create_contact(self, new: ContactCreate) -> Contact:
        """Create, in the customer stage, with its company; an existing email (a lead's too)
        is ``BackendConflict`` (HubSpot's 409)."""
        links = []
        if new.account_id:
            RECORD_ID(new.account_id)
            links = [
                association(new.account_id, CONTACT_TO_COMPANY),
                association(new.account_id, CONTACT_TO_PRIMARY_COMPANY),
            ]
        props = {**contact_to_vendor(new), "lifecyclestage": CUSTOMER_STAGE}
        raw = await self._create("contacts", props, links)
        return await self.get_contact(_record(raw, "contact")[0])

    async def update_contact(self, contact_id: str, changes: Mapping[str, Any]) -> Contact:
        """Apply canonical field changes (``ValueError`` for unknown or read-only ones)."""
        if "account_id" in changes:
            raise ValueError("not writable CRM fields: account_id (a HubSpot association)")
        await self._patch("contacts", contact_id, contact_to_vendor(changes))
        return await self.get_contact(contact_id)

    # --- accounts -----------------------------------------------------------------------

    async def get_account(self, account_id: str) -> Account:
        return account_from_vendor(await self._get("companies", account_id, tuple(ACCOUNT_FIELDS)))

    async def find_account_by_domain(self, domain: str) -> Account | None:
        wanted = domain_from_website(domain) or domain
        hits = await self._first_match("companies", [eq("domain", wanted)], tuple(ACCOUNT_FIELDS))
        return account_from_vendor(hits[0]) if hits else None

    async def create_account(self, new: AccountCreate) -> Account:
        raw = await self._create("companies", account_to_vendor(new))
        return await self.get_account(_record(raw, "company")[0])

    async def set_account_status(self, account_id: str, status: str) -> None:
        """The company's customer status (the ``customer_status`` property)."""
        await self._patch("companies", account_id, {"customer_status": status})

    # --- opportunities ------------------------------------------------------------------

    async def _deals(self, raws: list[Any]) -> list[Opportunity]:
        ids = [_record(raw, "deal")[0] for raw in raws]
        companies = await self._linked("deals", "companies", ids)
        contacts = await self._linked("deals", "contacts", ids)
        return [
            opportunity_from_vendor(raw, pick(companies.get(i, [])), pick(contacts.get(i, [])))
            for raw, i in zip(raws, ids, strict=True)
        ]

    async def iter_opportunities(self, account_id: str | None = None) -> AsyncIterator[Opportunity]:
        """Every deal (of one company: found by HubSpot's search on the association)."""
        if account_id is not None:
            RECORD_ID(account_id)
            async for raws in self._search_all(
                "deals", [eq("associations.company", account_id)], tuple(DEAL_FIELDS)
            ):
                for deal in await self._deals(raws):
                    yield deal
            return
        after: str | None = None
        while True:
            params: dict[str, str | int] = {
                "limit": LIST_LIMIT,
                "properties": ",".join(DEAL_FIELDS),
            }
            if after is not None:
                params["after"] = after
            data = (await self.request("GET", f"{OBJECTS}/deals", params=params)).json_object()
            for deal in await self._deals(results_of(data)):
                yield deal
            after = next_after(data)
            if after is None:
                return

    async def get_opportunity(self, opportunity_id: str) -> Opportunity:
        raw = await self._get("deals", opportunity_id, tuple(DEAL_FIELDS), "companies,contacts")
        return opportunity_from_vendor(
            raw, pick(associated_ids(raw, "companies")), pick(associated_ids(raw, "contacts"))
        )

    async def set_opportunity_stage(
        self, opportunity_id: str, stage: OpportunityStage
    ) -> Opportunity:
        await self._patch("deals", opportunity_id, {"dealstage": STAGE_TO_VENDOR[stage]})
        return await self.get_opportunity(opportunity_id)

    # --- tasks --------------------------------------------------------------------------

    async def create_task(self, activity: Activity) -> Activity:
        """A task associated with its contact and, as ``related_to_id``, a company."""
        links = []
        if activity.contact_id:
            links.append(association(RECORD_ID(activity.contact_id), TASK_TO_CONTACT))
        if activity.related_to_id:
            links.append(association(RECORD_ID(activity.related_to_id), TASK_TO_COMPANY))
        raw = await self._create("tasks", task_to_vendor(activity), links)
        rid = _record(raw, "task")[0]
        got = await self._get("tasks", rid, tuple(TASK_FIELDS), "contacts,companies")
        return task_from_vendor(
            got, pick(associated_ids(got, "contacts")), pick(associated_ids(got, "companies"))
        )

    async def iter_tasks(self, contact_id: str) -> AsyncIterator[Activity]:
        RECORD_ID(contact_id)
        async for raws in self._search_all(
            "tasks", [eq("associations.contact", contact_id)], tuple(TASK_FIELDS)
        ):
            ids = [_record(raw, "task")[0] for raw in raws]
            companies = await self._linked("tasks", "companies", ids)
            for raw, i in zip(raws, ids, strict=True):
                yield task_from_vendor(raw, contact_id, pick(companies.get(i, [])))

    # --- leads --------------------------------------------------------------------------

    async def create_lead(self, lead: Lead) -> Lead:
        """A contact in the ``lead`` stage; an existing email is ``BackendConflict`` (409)."""
        raw = await self._create("contacts", lead_to_vendor(lead))
        return lead_from_vendor(
            await self._get("contacts", _record(raw, "contact")[0], LEAD_PROPERTIES)
        )

    async def find_lead_by_email(self, email: str) -> Lead | None:
        hits = await self._first_match("contacts", [eq("email", email)], LEAD_PROPERTIES)
        for raw in hits:
            if is_lead(_record(raw, "contact")[1]):
                return lead_from_vendor(raw)
        return None

    async def set_lead_status(self, lead_id: str, status: LeadStatus) -> Lead:
        await self._patch("contacts", lead_id, lead_status_to_vendor(status))
        return lead_from_vendor(await self._get("contacts", lead_id, LEAD_PROPERTIES))
