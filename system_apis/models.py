"""Canonical models: the one vocabulary process and experience APIs speak.

Each system API maps its vendor's shape to and from these. Money is ``Decimal`` in major units
with an ISO currency code; times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Canonical(BaseModel):
    """Base of every canonical model: unknown fields are a mapping bug, not data."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Page(Canonical, Generic[T]):
    """One page of a list; ``next_cursor`` is opaque and ``None`` on the last page."""

    items: list[T]
    next_cursor: str | None = None


# --- CRM ------------------------------------------------------------------------------------


class Account(Canonical):
    id: str
    name: str
    domain: str | None = None
    industry: str | None = None
    status: str | None = None
    erp_customer_number: str | None = None


class Contact(Canonical):
    id: str
    account_id: str | None = None
    email: str
    first_name: str
    last_name: str
    phone: str | None = None
    title: str | None = None
    erp_customer_number: str | None = None
    created_at: datetime | None = None


class OpportunityStage(StrEnum):
    PROSPECTING = "prospecting"
    QUALIFICATION = "qualification"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"


class Opportunity(Canonical):
    id: str
    account_id: str | None = None
    contact_id: str | None = None
    name: str
    stage: OpportunityStage
    amount: Decimal | None = None
    currency: str = "USD"
    close_date: date | None = None


class Activity(Canonical):
    """A CRM task / logged activity."""

    id: str | None = None
    subject: str
    related_to_id: str | None = None
    contact_id: str | None = None
    status: str = "completed"
    due_date: date | None = None
    description: str | None = None


class LeadStatus(StrEnum):
    NEW = "new"
    WORKING = "working"
    QUALIFIED = "qualified"
    CONVERTED = "converted"
    DISQUALIFIED = "disqualified"


class Lead(Canonical):
    id: str | None = None
    email: str
    first_name: str
    last_name: str
    company: str | None = None
    phone: str | None = None
    source: str | None = None
    status: LeadStatus = LeadStatus.NEW
    score: int | None = None


# --- ERP ------------------------------------------------------------------------------------


class ErpCustomer(Canonical):
    customer_number: str
    name: str
    email: str | None = None
    phone: str | None = None
    city: str | None = None
    country: str | None = None
    crm_contact_id: str | None = None


class OrderStatus(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    INVOICED = "invoiced"
    CANCELLED = "cancelled"


class OrderLine(Canonical):
    sku: str
    quantity: int = Field(gt=0)
    unit_price: Decimal | None = None


class Order(Canonical):
    id: str
    customer_number: str
    channel: str | None = None
    status: OrderStatus
    currency: str = "USD"
    total: Decimal | None = None
    created_at: datetime | None = None
    lines: list[OrderLine] = Field(default_factory=list)


# --- Billing --------------------------------------------------------------------------------


class BillingCustomer(Canonical):
    id: str
    email: str
    name: str | None = None
    crm_contact_id: str | None = None
    erp_customer_number: str | None = None


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class Invoice(Canonical):
    id: str
    customer_id: str
    status: InvoiceStatus
    currency: str = "USD"
    total: Decimal
    amount_due: Decimal
    amount_paid: Decimal = Decimal(0)
    order_ref: str | None = None
    due_date: date | None = None
    created_at: datetime | None = None


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"


class Payment(Canonical):
    id: str
    customer_id: str
    invoice_id: str | None = None
    amount: Decimal
    currency: str = "USD"
    status: PaymentStatus
    created_at: datetime | None = None


# --- Support --------------------------------------------------------------------------------


class SupportUser(Canonical):
    id: str
    email: str
    name: str
    crm_contact_id: str | None = None


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Ticket(Canonical):
    id: str
    requester_id: str
    subject: str
    description: str | None = None
    status: TicketStatus
    priority: TicketPriority | None = None
    tags: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TicketComment(Canonical):
    id: str
    ticket_id: str
    author_id: str
    body: str
    public: bool = True
    created_at: datetime | None = None


# --- Marketing ------------------------------------------------------------------------------


class MarketingContact(Canonical):
    id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    lifecycle_stage: str | None = None
    lead_score: int | None = None
    crm_contact_id: str | None = None


class MarketingList(Canonical):
    id: str
    name: str
    size: int | None = None


class Engagement(Canonical):
    """A marketing contact's engagement summary."""

    contact_id: str
    emails_sent: int = 0
    opens: int = 0
    clicks: int = 0
    last_engaged_at: datetime | None = None


class EmailSend(Canonical):
    id: str | None = None
    contact_id: str
    template: str
    status: str = "queued"


# --- Inventory ------------------------------------------------------------------------------


class StockLevel(Canonical):
    sku: str
    name: str | None = None
    on_hand: int
    reserved: int
    available: int
    warehouse: str | None = None
    unit_price: Decimal | None = None


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    CONSUMED = "consumed"
    EXPIRED = "expired"


class Reservation(Canonical):
    id: str
    status: ReservationStatus
    lines: list[OrderLine]
    reference: str | None = None
    expires_at: datetime | None = None


# --- Inputs: what a caller may set on a new record (the system assigns the rest) ----------


class ContactCreate(Canonical):
    """A new contact: the canonical fields a caller may set (the CRM assigns id and date)."""

    email: str
    first_name: str
    last_name: str
    account_id: str | None = None
    phone: str | None = None
    title: str | None = None
    erp_customer_number: str | None = None


class AccountCreate(Canonical):
    name: str
    domain: str | None = None
    industry: str | None = None
    status: str | None = None
    erp_customer_number: str | None = None


class ErpCustomerCreate(Canonical):
    """A new ERP customer: the ERP assigns the customer number."""

    name: str = Field(min_length=1, max_length=35)
    email: str | None = None
    phone: str | None = None
    city: str | None = None
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    crm_contact_id: str | None = None


# --- Cross-system ---------------------------------------------------------------------------


class Customer(Canonical):
    """A customer as one record, with its id in every system (the cross-reference)."""

    id: str | None = None
    email: str
    first_name: str
    last_name: str
    phone: str | None = None
    company: str | None = None
    system_ids: dict[str, str] = Field(default_factory=dict)
