"""Deterministic seed data shared by the six sandbox backends.

About 1,000 people exist in every system under that system's own ids; each backend derives its
own records (orders, invoices, tickets...) from these with its own ``rng(name)``, so every run
produces the same data.

Every CRM connector's sandbox holds the same accounts, contacts, deals and leads (``deals()``,
``leads()``), each under its vendor's id syntax (``CRM_IDS``). The other systems cross-reference
the CRM in use: ``use_crm(connector)`` chooses it (Salesforce by default), and with it the ids
``Person.crm_contact_id`` and ``AccountSeed.crm_id`` give.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache

PEOPLE = 1000
ACCOUNTS = 250
SKUS = 300
PARTNERS: tuple[str, ...] = ("partner-acme", "partner-globex")
SEED = 20261127

_FIRST = (
    "Ada Alan Grace Linus Margaret Dennis Barbara Ken Frances Edsger Radia Tim Katherine John "
    "Hedy Claude Joan Donald Sophie Guido Anita Bjarne Shafi Leslie Yukihiro Rasmus Brendan Lynn "
    "Niklaus Jean"
).split()
_LAST = (
    "Lovelace Turing Hopper Torvalds Hamilton Ritchie Liskov Thompson Allen Dijkstra Perlman "
    "Berners Johnson McCarthy Lamarr Shannon Clarke Knuth Wilson Rossum Borg Stroustrup Goldwasser "
    "Lamport Matsumoto Lerdorf Eich Conway Wirth Sammet"
).split()
_COMPANY_WORDS = (
    "Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne Wonka Cyberdyne Tyrell Soylent "
    "Aperture Oscorp Gringotts Monarch Massive Dynamic Pied Piper"
).split()
_SUFFIX = ("Inc", "LLC", "GmbH", "Ltd", "Corp")
_INDUSTRIES = ("Manufacturing", "Retail", "Software", "Logistics", "Healthcare", "Finance")
_CITIES = (("Berlin", "DE"), ("Austin", "US"), ("Leeds", "GB"), ("Lyon", "FR"), ("Osaka", "JP"))
_PRODUCTS = ("Bolt", "Widget", "Sprocket", "Gasket", "Valve", "Bracket", "Hinge", "Spring")


def rng(name: str) -> random.Random:
    """A private, stable random stream per backend (or per purpose)."""
    return random.Random(f"{SEED}:{name}")


@dataclass(frozen=True, slots=True)
class AccountSeed:
    index: int
    name: str
    domain: str
    industry: str

    @property
    def crm_id(self) -> str:
        """The account's id in the CRM in use (``use_crm``)."""
        return crm_ids().account(self.index)


@dataclass(frozen=True, slots=True)
class Person:
    index: int
    first_name: str
    last_name: str
    email: str
    phone: str
    city: str
    country: str
    account: AccountSeed
    erp_customer_number: str
    billing_customer_id: str
    support_user_id: int
    marketing_contact_id: int

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def crm_contact_id(self) -> str:
        """The person's contact id in the CRM in use (``use_crm``)."""
        return crm_ids().contact(self.index)


@dataclass(frozen=True, slots=True)
class Sku:
    sku: str
    name: str
    unit_price: Decimal
    unit_cost: Decimal
    on_hand: int


def crm_id(prefix: str, n: int) -> str:
    """An 18-character Salesforce-style id: 3-char key prefix, 'TR', 13 digits."""
    return f"{prefix}TR{n:013d}"


@dataclass(frozen=True, slots=True)
class CrmIds:
    """The seed's records under one CRM's ids: the n-th (from 1) account, contact, deal, lead,
    and ids of the right syntax that name no record (for not-found cases)."""

    connector: str
    account: Callable[[int], str]
    contact: Callable[[int], str]
    deal: Callable[[int], str]
    lead: Callable[[int], str]
    missing_contact: str
    missing_deal: str


HUBSPOT_COMPANY_BASE = 20_000
HUBSPOT_CONTACT_BASE = 100_000
HUBSPOT_LEAD_BASE = 200_000
HUBSPOT_DEAL_BASE = 300_000

CRM_IDS: dict[str, CrmIds] = {
    "salesforce": CrmIds(
        "salesforce",
        account=lambda n: crm_id("001", n),
        contact=lambda n: crm_id("003", n),
        deal=lambda n: crm_id("006", n),
        lead=lambda n: crm_id("00Q", n),
        missing_contact=crm_id("003", 9_999_999_999_999),
        missing_deal=crm_id("006", 9_999_999_999_999),
    ),
    "hubspot-crm": CrmIds(
        "hubspot-crm",
        account=lambda n: str(HUBSPOT_COMPANY_BASE + n),
        contact=lambda n: str(HUBSPOT_CONTACT_BASE + n),
        deal=lambda n: str(HUBSPOT_DEAL_BASE + n),
        lead=lambda n: str(HUBSPOT_LEAD_BASE + n),
        missing_contact="999999999",
        missing_deal="999999998",
    ),
}
"""Each CRM connector's sandbox ids of the seed records."""

_in_use: list[CrmIds] = [CRM_IDS["salesforce"]]


def use_crm(connector: str) -> CrmIds:
    """Make ``connector`` the CRM the other systems cross-reference; its seed ids.

    Called before the sandboxes are made (their records are built from the seed when made).
    """
    try:
        ids = CRM_IDS[connector]
    except KeyError:
        known = sorted(CRM_IDS)
        raise LookupError(f"no seed ids for CRM connector {connector!r}: {known}") from None
    _in_use[0] = ids
    return ids


def crm_ids() -> CrmIds:
    """The seed ids of the CRM in use."""
    return _in_use[0]


def erp_customer_number(n: int) -> str:
    return f"{100000 + n:010d}"


@cache
def accounts() -> tuple[AccountSeed, ...]:
    r = rng("accounts")
    out = []
    for i in range(1, ACCOUNTS + 1):
        words = r.sample(_COMPANY_WORDS, 2)
        name = f"{words[0]} {words[1]} {r.choice(_SUFFIX)}"
        domain = f"{words[0].lower()}{words[1].lower()}{i}.example.com"
        out.append(AccountSeed(i, name, domain, r.choice(_INDUSTRIES)))
    return tuple(out)


@cache
def people() -> tuple[Person, ...]:
    r = rng("people")
    accts = accounts()
    out = []
    for i in range(1, PEOPLE + 1):
        first, last = r.choice(_FIRST), r.choice(_LAST)
        account = accts[(i - 1) % ACCOUNTS]
        city, country = r.choice(_CITIES)
        out.append(
            Person(
                index=i,
                first_name=first,
                last_name=last,
                email=f"{first.lower()}.{last.lower()}{i}@{account.domain}",
                phone=f"+1-555-{r.randint(100, 999)}-{r.randint(1000, 9999)}",
                city=city,
                country=country,
                account=account,
                erp_customer_number=erp_customer_number(i),
                billing_customer_id=f"cus_TR{i:08d}",
                support_user_id=360_000_000 + i,
                marketing_contact_id=5_000 + i,
            )
        )
    return tuple(out)


@cache
def skus() -> tuple[Sku, ...]:
    r = rng("skus")
    out = []
    for i in range(1, SKUS + 1):
        price = Decimal(r.randint(199, 49_999)) / 100
        cost = (price * Decimal("0.6")).quantize(Decimal("0.01"))
        name = f"{r.choice(_PRODUCTS)} {r.choice('ABCDEFGH')}{r.randint(10, 99)}"
        out.append(Sku(f"SKU-{i:04d}", name, price, cost, r.randint(0, 500)))
    return tuple(out)


def person_by_email(email: str) -> Person | None:
    return _by_email().get(email.lower())


@cache
def _by_email() -> dict[str, Person]:
    return {p.email: p for p in people()}


ORDERS = 3000
ORDER_STATUSES = ("open", "confirmed", "shipped", "invoiced", "cancelled")


@dataclass(frozen=True, slots=True)
class OrderLineSeed:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class OrderSeed:
    """A sales order as the ERP holds it; billing invoices the shipped/invoiced ones."""

    number: str  # ERP VBELN, 10 digits
    person: Person
    channel: str  # "web", "sales", or a partner id from PARTNERS
    status: str  # one of ORDER_STATUSES
    created: str  # ISO date, 2026
    lines: tuple[OrderLineSeed, ...]

    @property
    def total(self) -> Decimal:
        return sum((ln.unit_price * ln.quantity for ln in self.lines), Decimal(0))


@cache
def orders() -> tuple[OrderSeed, ...]:
    r = rng("orders")
    ppl, catalogue = people(), skus()
    out = []
    for i in range(1, ORDERS + 1):
        person = ppl[r.randrange(len(ppl))]
        roll = r.random()
        channel = (
            "partner-acme"
            if roll < 0.1
            else "partner-globex"
            if roll < 0.2
            else ("web" if roll < 0.7 else "sales")
        )
        lines = tuple(
            OrderLineSeed(s.sku, r.randint(1, 10), s.unit_price)
            for s in r.sample(catalogue, r.randint(1, 4))
        )
        month, day = r.randint(1, 11), r.randint(1, 28)
        out.append(
            OrderSeed(
                number=f"{4_500_000_000 + i}",
                person=person,
                channel=channel,
                status=r.choices(ORDER_STATUSES, weights=(2, 2, 3, 4, 1))[0],
                created=f"2026-{month:02d}-{day:02d}",
                lines=lines,
            )
        )
    return tuple(out)


DEALS = 600
DEAL_STAGES = (
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)
"""The canonical stages (``OpportunityStage`` values); each CRM sandbox maps them to its own."""


@dataclass(frozen=True, slots=True)
class DealSeed:
    index: int
    person: Person
    stage: str  # one of DEAL_STAGES
    amount: int  # whole currency units
    close: date

    @property
    def name(self) -> str:
        return f"{self.person.account.name} - Deal {self.index}"


@cache
def deals() -> tuple[DealSeed, ...]:
    """The deals every CRM holds, each of one person's account with them as its contact."""
    r = rng("deals")
    ppl = people()
    out = []
    for i in range(1, DEALS + 1):
        person = ppl[r.randrange(len(ppl))]
        stage = r.choices(DEAL_STAGES, weights=(3, 3, 2, 2, 3, 2))[0]
        close = date(2026, r.randint(1, 12), r.randint(1, 28))
        out.append(DealSeed(i, person, stage, r.randint(10, 5000) * 100, close))
    return tuple(out)


LEADS = 50
LEAD_STATUSES = ("new", "working", "qualified", "disqualified")
"""The canonical statuses (``LeadStatus`` values) of open seed leads."""


@dataclass(frozen=True, slots=True)
class LeadSeed:
    index: int
    first_name: str
    last_name: str
    email: str
    company: str
    status: str  # one of LEAD_STATUSES
    score: int


@cache
def leads() -> tuple[LeadSeed, ...]:
    """The prospects every CRM holds as leads (none of them is a customer)."""
    r = rng("leads")
    return tuple(
        LeadSeed(
            i,
            "Prospect",
            f"Number{i}",
            f"prospect{i}@lead{i}.example.org",
            f"Lead Company {i}",
            r.choice(LEAD_STATUSES),
            r.randint(0, 100),
        )
        for i in range(1, LEADS + 1)
    )
