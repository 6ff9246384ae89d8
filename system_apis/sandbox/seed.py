"""Deterministic seed data shared by the six sandbox backends.

About 1,000 people exist in every system under that system's own ids; each backend derives its
own records (orders, invoices, tickets...) from these with its own ``rng(name)``, so every run
produces the same data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
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
    crm_id: str


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
    crm_contact_id: str
    erp_customer_number: str
    billing_customer_id: str
    support_user_id: int
    marketing_contact_id: int

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


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
        out.append(AccountSeed(i, name, domain, r.choice(_INDUSTRIES), crm_id("001", i)))
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
                crm_contact_id=crm_id("003", i),
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
