"""Sandbox CRM imitating Salesforce: OAuth client credentials, REST sObjects and a small SOQL.

Only what Trellis uses: ``SELECT f, ... FROM Object [WHERE F = 'v' AND ...] [ORDER BY Id]``
with query locators for paging (``nextRecordsUrl``), sObject get/create/patch, and Salesforce's
error bodies (a JSON list of ``{"message", "errorCode"}``, with ``fields`` where fields are at
fault). As at Salesforce, every REST path also answers with a trailing slash
(``/query/?q=...``, ``/sobjects/Contact/``, the form simple-salesforce sends), a method a
resource does not take is ``405 METHOD_NOT_ALLOWED`` and an unknown resource ``404 NOT_FOUND``,
both in that error shape.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from . import seed

API = "/services/data/v60.0"
CLIENT_ID = "trellis-sandbox"
CLIENT_SECRET = "crm-sandbox-secret"  # noqa: S105 - the sandbox's own, documented credential
TOKEN_LIFETIME_S = 3600
MAX_BATCH = 2000
DEFAULT_BATCH = 200
MAX_LOCATORS = 1000
NEW_ID_START = 100_001  # ids of created records start beyond every seed range

STAGES = (
    "Prospecting",
    "Qualification",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Qualified",
    "Closed - Converted",
    "Closed - Not Converted",
)
TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
TITLES = ("CEO", "CTO", "Buyer", "Head of Operations", "Procurement Manager", "Engineer", None)


@dataclass(frozen=True, slots=True)
class SObjectType:
    """Describe of one sObject: its key prefix, fields, required and read-only ones."""

    name: str
    prefix: str
    fields: tuple[str, ...]
    required: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ("Id",)
    references: tuple[str, ...] = ()
    picklists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unique_email: bool = False

    def canonical_field(self, name: str) -> str | None:
        """SOQL field names are case-insensitive; answer with the describe's spelling."""
        lowered = name.lower()
        return next((f for f in self.fields if f.lower() == lowered), None)


TYPES: dict[str, SObjectType] = {
    t.name: t
    for t in (
        SObjectType(
            "Contact",
            "003",
            (
                "Id",
                "FirstName",
                "LastName",
                "Email",
                "Phone",
                "Title",
                "AccountId",
                "ERP_Customer_Number__c",
                "CreatedDate",
            ),
            required=("LastName",),
            read_only=("Id", "CreatedDate"),
            references=("AccountId",),
            unique_email=True,
        ),
        SObjectType(
            "Account",
            "001",
            ("Id", "Name", "Website", "Industry", "Customer_Status__c", "ERP_Customer_Number__c"),
            required=("Name",),
        ),
        SObjectType(
            "Opportunity",
            "006",
            (
                "Id",
                "Name",
                "AccountId",
                "Primary_Contact__c",
                "StageName",
                "Amount",
                "CloseDate",
                "IsWon",
            ),
            required=("Name", "StageName", "CloseDate"),
            read_only=("Id", "IsWon"),
            references=("AccountId", "Primary_Contact__c"),
            picklists={"StageName": STAGES},
        ),
        SObjectType(
            "Task",
            "00T",
            ("Id", "Subject", "WhatId", "WhoId", "Status", "ActivityDate", "Description"),
            required=("Subject",),
            references=("WhatId", "WhoId"),
            picklists={"Status": TASK_STATUSES},
        ),
        SObjectType(
            "Lead",
            "00Q",
            (
                "Id",
                "FirstName",
                "LastName",
                "Email",
                "Company",
                "Phone",
                "Status",
                "LeadSource",
                "Lead_Score__c",
            ),
            required=("LastName", "Company"),
            picklists={"Status": LEAD_STATUSES},
            unique_email=True,
        ),
    )
}

Record = dict[str, Any]


class SfError(Exception):
    """A Salesforce error answer: status plus the ``[{"message","errorCode"}]`` body, with
    ``fields`` only when the error names fields (as Salesforce's own answers do)."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields

    def response(self) -> web.Response:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            error["fields"] = self.fields
        return _json([error], self.status)


@dataclass
class QueryCursor:
    sobject: str
    fields: list[str]
    ids: list[str]
    batch: int


@dataclass
class CrmState:
    records: dict[str, dict[str, Record]] = field(default_factory=lambda: {t: {} for t in TYPES})
    emails: dict[str, dict[str, str]] = field(default_factory=lambda: {t: {} for t in TYPES})
    tokens: dict[str, float] = field(default_factory=dict)
    cursors: OrderedDict[str, QueryCursor] = field(default_factory=OrderedDict)
    next_n: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, NEW_ID_START))

    def insert(self, sobject: str, record: Record) -> None:
        self.records[sobject][record["Id"]] = record
        if TYPES[sobject].unique_email and record.get("Email"):
            self.emails[sobject][str(record["Email"]).lower()] = record["Id"]

    def new_id(self, sobject: str) -> str:
        n = self.next_n[sobject]
        self.next_n[sobject] = n + 1
        return seed.crm_id(TYPES[sobject].prefix, n)

    def exists(self, record_id: str) -> bool:
        return any(record_id in recs for recs in self.records.values())


# --- seed -----------------------------------------------------------------------------------


def _sf_datetime(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


DEAL_STAGE = {
    "prospecting": "Prospecting",
    "qualification": "Qualification",
    "proposal": "Proposal/Price Quote",
    "negotiation": "Negotiation/Review",
    "closed_won": "Closed Won",
    "closed_lost": "Closed Lost",
}
"""The seed's canonical deal stages as Salesforce's ``StageName`` values."""
LEAD_STATUS = {
    "new": "Open - Not Contacted",
    "working": "Working - Contacted",
    "qualified": "Qualified",
    "disqualified": "Closed - Not Converted",
}
"""The seed's canonical lead statuses as Salesforce's Lead ``Status`` values."""


def seed_state() -> CrmState:
    """Deterministic records: every seed person a Contact, every account an Account, every seed
    deal an Opportunity, every seed lead a Lead, and a few tasks."""
    state = CrmState()
    ids = seed.CRM_IDS["salesforce"]
    r = seed.rng("crm")
    statuses = ("Active", "Active", "Prospect", "Churned")
    for a in seed.accounts():
        state.insert(
            "Account",
            {
                "Id": ids.account(a.index),
                "Name": a.name,
                "Website": a.domain,
                "Industry": a.industry,
                "Customer_Status__c": r.choice(statuses),
                "ERP_Customer_Number__c": None,
            },
        )
    epoch = datetime(2025, 1, 1, tzinfo=UTC)
    for p in seed.people():
        created = epoch + timedelta(minutes=r.randrange(0, 500_000))
        state.insert(
            "Contact",
            {
                "Id": ids.contact(p.index),
                "FirstName": p.first_name,
                "LastName": p.last_name,
                "Email": p.email,
                "Phone": p.phone,
                "Title": r.choice(TITLES),
                "AccountId": ids.account(p.account.index),
                "ERP_Customer_Number__c": p.erp_customer_number,
                "CreatedDate": _sf_datetime(created),
            },
        )
    for d in seed.deals():
        stage = DEAL_STAGE[d.stage]
        state.insert(
            "Opportunity",
            {
                "Id": ids.deal(d.index),
                "Name": d.name,
                "AccountId": ids.account(d.person.account.index),
                "Primary_Contact__c": ids.contact(d.person.index),
                "StageName": stage,
                "Amount": float(d.amount),
                "CloseDate": d.close.isoformat(),
                "IsWon": stage == "Closed Won",
            },
        )
    people = seed.people()
    for i in range(1, 41):
        person = people[r.randrange(len(people))]
        state.insert(
            "Task",
            {
                "Id": seed.crm_id("00T", i),
                "Subject": r.choice(("Call", "Email", "Follow up")),
                "WhatId": ids.account(person.account.index),
                "WhoId": ids.contact(person.index),
                "Status": r.choice(TASK_STATUSES),
                "ActivityDate": date(2026, r.randint(1, 12), r.randint(1, 28)).isoformat(),
                "Description": None,
            },
        )
    for lead in seed.leads():
        state.insert(
            "Lead",
            {
                "Id": ids.lead(lead.index),
                "FirstName": lead.first_name,
                "LastName": lead.last_name,
                "Email": lead.email,
                "Company": lead.company,
                "Phone": None,
                "Status": LEAD_STATUS[lead.status],
                "LeadSource": "Web",
                "Lead_Score__c": float(lead.score),
            },
        )
    return state


# --- SOQL -----------------------------------------------------------------------------------

_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<fields>[\w\s,]+?)\s+FROM\s+(?P<obj>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<dir>ASC|DESC))?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CLAUSE = re.compile(r"\s*(\w+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(null))\s*", re.IGNORECASE)
_AND = re.compile(r"AND\s+", re.IGNORECASE)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), value)


def _parse_where(text: str) -> list[tuple[str, str | None]]:
    """``F = 'v' AND G = null`` into pairs; anything else is MALFORMED_QUERY."""
    clauses: list[tuple[str, str | None]] = []
    pos = 0
    while True:
        m = _CLAUSE.match(text, pos)
        if not m:
            raise SfError(400, "MALFORMED_QUERY", f"unexpected token near: {text[pos : pos + 30]}")
        clauses.append((m.group(1), None if m.group(3) else _unescape(m.group(2))))
        pos = m.end()
        if pos >= len(text):
            return clauses
        a = _AND.match(text, pos)
        if not a:
            raise SfError(400, "MALFORMED_QUERY", f"unexpected token near: {text[pos : pos + 30]}")
        pos = a.end()


def run_query(state: CrmState, soql: str, batch: int) -> QueryCursor:
    m = _QUERY.match(soql)
    if not m:
        raise SfError(400, "MALFORMED_QUERY", "unexpected token in query")
    obj = next((t for t in TYPES.values() if t.name.lower() == m["obj"].lower()), None)
    if obj is None:
        raise SfError(400, "INVALID_TYPE", f"sObject type '{m['obj']}' is not supported.")

    def column(name: str) -> str:
        found = obj.canonical_field(name)
        if found is None:
            raise SfError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj.name}'.")
        return found

    fields = [column(f.strip()) for f in m["fields"].split(",") if f.strip()]
    where = [(column(f), v) for f, v in _parse_where(m["where"])] if m["where"] else []
    records = state.records[obj.name].values()
    ids = [rec["Id"] for rec in records if all(_matches(rec.get(f), v) for f, v in where)]
    if m["order"]:
        if column(m["order"]) != "Id":
            raise SfError(400, "MALFORMED_QUERY", "only ORDER BY Id is supported here")
        ids.sort(reverse=(m["dir"] or "").upper() == "DESC")
    if m["limit"]:
        ids = ids[: int(m["limit"])]
    return QueryCursor(obj.name, fields, ids, batch)


def _matches(actual: Any, wanted: str | None) -> bool:
    if wanted is None:
        return actual is None
    if actual is None:
        return False
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    return str(actual).lower() == wanted.lower()  # text comparison is case-insensitive in SOQL


# --- helpers --------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _attributes(sobject: str, record_id: str) -> dict[str, str]:
    return {"type": sobject, "url": f"{API}/sobjects/{sobject}/{record_id}"}


def _sobject(request: web.Request) -> SObjectType:
    name = request.match_info["sobject"]
    obj = TYPES.get(name)
    if obj is None:
        raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
    return obj


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise SfError(400, "JSON_PARSER_ERROR", f"malformed JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise SfError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return data


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _validate(
    state: CrmState, obj: SObjectType, values: dict[str, Any], record_id: str | None
) -> dict[str, Any]:
    """The vendor's checks on a create or update body; answers the describe-spelled values."""
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if name == "attributes":
            continue
        f = name if name in obj.fields else None
        if not f:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on sobject of type {obj.name}",
                [name],
            )
        if f in obj.read_only:
            raise SfError(
                400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {f}.", [f]
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise SfError(400, "JSON_PARSER_ERROR", f"Cannot deserialize value of {f}", [f])
        if f in obj.picklists and value not in obj.picklists[f]:
            raise SfError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{f}: bad value for restricted picklist field: {value}",
                [f],
            )
        if f == "Email" and value is not None and not _EMAIL.match(str(value)):
            raise SfError(
                400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {value}", [f]
            )
        if f in obj.references and value and not state.exists(str(value)):
            raise SfError(
                400, "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [f]
            )
        clean[f] = value
    if obj.unique_email and clean.get("Email"):
        other = state.emails[obj.name].get(str(clean["Email"]).lower())
        if other is not None and other != record_id:
            raise SfError(
                400,
                "DUPLICATES_DETECTED",
                f"Use one of these records? A {obj.name} with this email exists: {other}",
                ["Email"],
            )
    return clean


# --- handlers -------------------------------------------------------------------------------


def _routes(state: CrmState) -> list[web.RouteDef]:
    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        cid, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                cid = secret = None
        if form.get("grant_type") != "client_credentials":
            return _json(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
                400,
            )
        if cid != CLIENT_ID or not secrets.compare_digest(str(secret or ""), CLIENT_SECRET):
            return _json(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, 400
            )
        tok = secrets.token_urlsafe(32)
        state.tokens[tok] = time.monotonic() + TOKEN_LIFETIME_S
        return _json(
            {
                "access_token": tok,
                "instance_url": f"{request.scheme}://{request.host}",
                "id": f"{request.scheme}://{request.host}/id/00DTR0000000001/005TR0000000001",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
                "expires_in": TOKEN_LIFETIME_S,
            }
        )

    async def revoke_all(request: web.Request) -> web.Response:
        count = len(state.tokens)
        state.tokens.clear()
        return _json({"revoked": count})

    async def query(request: web.Request) -> web.Response:
        soql = request.query.get("q")
        if not soql:
            raise SfError(400, "MALFORMED_QUERY", "query parameter q is required")
        cursor = run_query(state, soql, _batch_size(request) or DEFAULT_BATCH)
        return _json(_page(state, cursor, secrets.token_hex(8).upper(), 0, cursor.batch))

    async def query_more(request: web.Request) -> web.Response:
        locator = request.match_info["locator"]
        key, _, offset = locator.rpartition("-")
        cursor = state.cursors.get(key)
        if cursor is None or not offset.isdigit() or int(offset) > len(cursor.ids):
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        state.cursors.move_to_end(key)
        return _json(_page(state, cursor, key, int(offset), _batch_size(request) or cursor.batch))

    async def get_record(request: web.Request) -> web.Response:
        obj = _sobject(request)
        rec = state.records[obj.name].get(request.match_info["id"])
        if rec is None:
            raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
        return _json({"attributes": _attributes(obj.name, rec["Id"]), **rec})

    async def create_record(request: web.Request) -> web.Response:
        obj = _sobject(request)
        values = _validate(state, obj, await _body(request), None)
        missing = [f for f in obj.required if values.get(f) in (None, "")]
        if missing:
            raise SfError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        record: Record = dict.fromkeys(obj.fields)
        record.update(values)
        record["Id"] = state.new_id(obj.name)
        if obj.name == "Contact":
            record["CreatedDate"] = _sf_datetime(datetime.now(UTC))
        if obj.name == "Opportunity":
            record["IsWon"] = record["StageName"] == "Closed Won"
        if obj.name == "Task" and record["Status"] is None:
            record["Status"] = "Not Started"
        if obj.name == "Lead" and record["Status"] is None:
            record["Status"] = "Open - Not Contacted"
        state.insert(obj.name, record)
        return _json({"id": record["Id"], "success": True, "errors": []}, 201)

    async def update_record(request: web.Request) -> web.Response:
        obj = _sobject(request)
        rec = state.records[obj.name].get(request.match_info["id"])
        if rec is None:
            raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
        values = _validate(state, obj, await _body(request), rec["Id"])
        blanked = [f for f in obj.required if f in values and values[f] in (None, "")]
        if blanked:
            raise SfError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(blanked)}]",
                blanked,
            )
        if obj.unique_email and "Email" in values and rec.get("Email"):
            state.emails[obj.name].pop(str(rec["Email"]).lower(), None)
        rec.update(values)
        if obj.name == "Opportunity":
            rec["IsWon"] = rec["StageName"] == "Closed Won"
        state.insert(obj.name, rec)
        return web.Response(status=204)

    rest = [
        web.get(f"{API}/query", query),
        web.get(f"{API}/query/{{locator}}", query_more),
        web.get(f"{API}/sobjects/{{sobject}}/{{id}}", get_record),
        web.patch(f"{API}/sobjects/{{sobject}}/{{id}}", update_record),
        web.post(f"{API}/sobjects/{{sobject}}", create_record),
    ]
    slashed = [web.route(r.method, f"{r.path}/", r.handler) for r in rest]
    return [
        web.post("/services/oauth2/token", token),
        web.post("/__tokens/revoke-all", revoke_all),
        *rest,
        *slashed,
    ]


def _batch_size(request: web.Request) -> int | None:
    """``Sforce-Query-Options: batchSize=N``; Salesforce treats it as a hint, so clamp it."""
    raw = request.headers.get("Sforce-Query-Options", "")
    m = re.search(r"batchSize\s*=\s*(\d+)", raw)
    return min(max(int(m.group(1)), 1), MAX_BATCH) if m else None


def _page(state: CrmState, cursor: QueryCursor, key: str, offset: int, batch: int) -> Record:
    chunk = cursor.ids[offset : offset + batch]
    table = state.records[cursor.sobject]
    records = []
    for rid in chunk:
        rec = table.get(rid)
        if rec is None:
            continue
        row: Record = {"attributes": _attributes(cursor.sobject, rid)}
        row.update((f, rec.get(f)) for f in cursor.fields)
        records.append(row)
    end = offset + len(chunk)
    done = end >= len(cursor.ids)
    body: Record = {"totalSize": len(cursor.ids), "done": done}
    if done:
        state.cursors.pop(key, None)
    else:
        state.cursors[key] = cursor
        while len(state.cursors) > MAX_LOCATORS:
            state.cursors.popitem(last=False)
        body["nextRecordsUrl"] = f"{API}/query/{key}-{end}"
    body["records"] = records
    return body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _middleware(state: CrmState) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bearer token on every API route; SfError becomes Salesforce's error body."""
        if request.path.startswith("/services/data"):
            auth = request.headers.get("Authorization", "")
            tok = auth[7:] if auth.startswith("Bearer ") else ""
            expires = state.tokens.get(tok)
            if expires is None or expires < time.monotonic():
                state.tokens.pop(tok, None)
                return SfError(401, "INVALID_SESSION_ID", "Session expired or invalid").response()
        try:
            return await handler(request)
        except SfError as exc:
            return exc.response()
        except web.HTTPMethodNotAllowed as exc:
            allowed = ",".join(sorted(exc.allowed_methods))
            error = SfError(
                405,
                "METHOD_NOT_ALLOWED",
                f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}",
            )
            resp = error.response()
            resp.headers["Allow"] = allowed
            return resp
        except web.HTTPNotFound:
            if not request.path.startswith("/services/"):
                raise
            return SfError(404, "NOT_FOUND", "The requested resource does not exist").response()

    return guard


STATE = web.AppKey("crm", CrmState)
"""The app's live state, for tests and control endpoints."""


def create_app() -> web.Application:
    state = seed_state()
    app = web.Application(middlewares=[_middleware(state)])
    app[STATE] = state
    app.add_routes(_routes(state))
    return app
