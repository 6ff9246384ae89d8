"""What process APIs take and answer: canonical models (re-exported) and operation shapes.

The experience layer imports every model from here, never from ``system_apis``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from system_apis.identity import normal_email, normal_name
from system_apis.ids import IdSyntax
from system_apis.models import (
    Account,
    Activity,
    BillingCustomer,
    Contact,
    Customer,
    Engagement,
    ErpCustomer,
    Invoice,
    InvoiceStatus,
    Lead,
    LeadStatus,
    MarketingContact,
    Opportunity,
    OpportunityStage,
    Order,
    OrderLine,
    OrderStatus,
    Page,
    Payment,
    Reservation,
    ReservationStatus,
    StockLevel,
    SupportUser,
    Ticket,
    TicketPriority,
    TicketStatus,
)
from system_apis.roles import CRM_ID_CHARSET, Crm

__all__ = [
    "Account",
    "Activity",
    "BillingCustomer",
    "BillingSection",
    "CancelOrderRequest",
    "CancelledOrder",
    "CloseWonResult",
    "Contact",
    "CreateTicketRequest",
    "Customer",
    "Customer360",
    "Engagement",
    "ErpCustomer",
    "ErpSection",
    "Invoice",
    "InvoiceStatus",
    "Lead",
    "LeadCaptured",
    "LeadRequest",
    "LeadStatus",
    "MarketingContact",
    "MarketingSection",
    "OnboardRequest",
    "Opportunity",
    "OpportunityStage",
    "Order",
    "OrderDetail",
    "OrderLine",
    "OrderLineRequest",
    "OrderStatus",
    "Page",
    "Payment",
    "PlaceOrderRequest",
    "PlacedOrder",
    "Reservation",
    "ReservationStatus",
    "StockLevel",
    "SupportSection",
    "SupportUser",
    "Ticket",
    "TicketContext",
    "TicketPriority",
    "TicketStatus",
]


def _email(value: str) -> str:
    """RFC-valid syntax (no DNS lookup: onboarding must not depend on the caller's resolver),
    normalised and free of look-alike spoofing (``identity``)."""
    value = normal_email(value)
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return info.normalized.lower()


Email = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(_email)]
Name = Annotated[
    str,
    Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f<>]+$"),
    AfterValidator(normal_name),
]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9][0-9 ()./-]{4,28}$")]
CRM_ID_PATTERN = f"^{CRM_ID_CHARSET}$"
"""What any CRM's record id is made of (the schema's bound); the CRM in use checks its own."""
CRM_ID_SYNTAX = "crm_id_syntax"
"""The validation context key of the configured CRM's ``IdSyntax`` (``input_context``)."""


def input_context(crm: Crm) -> dict[str, Any]:
    """The validation context of a request body: what depends on the configured systems."""
    return {CRM_ID_SYNTAX: crm.id_syntax}


def _crm_id(value: str, info: ValidationInfo) -> str:
    syntax = (info.context or {}).get(CRM_ID_SYNTAX)
    if isinstance(syntax, IdSyntax) and not syntax.matches(value):
        raise ValueError("not a record id of the CRM in use")
    return value


CustomerId = Annotated[str, Field(pattern=CRM_ID_PATTERN), AfterValidator(_crm_id)]
"""A canonical customer id: the contact id in the CRM in use."""
CHANNEL_PATTERN = r"^(web|sales|partner-[a-z0-9-]{1,40})$"


class Input(BaseModel):
    """Request bodies: unknown fields are refused (a typo must not be silently dropped)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OnboardRequest(Input):
    email: Email
    first_name: Name
    last_name: Name
    company: Name | None = None
    phone: Phone | None = None


class LeadRequest(Input):
    email: Email
    first_name: Name
    last_name: Name
    company: Name | None = None
    phone: Phone | None = None
    source: Annotated[str, Field(min_length=1, max_length=40)] = "web-form"


class OrderLineRequest(Input):
    sku: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
    quantity: Annotated[int, Field(ge=1, le=1000)]


class PlaceOrderRequest(Input):
    customer_id: CustomerId
    lines: Annotated[list[OrderLineRequest], Field(min_length=1, max_length=50)]
    channel: Annotated[str, Field(pattern=CHANNEL_PATTERN)] = "sales"

    @field_validator("lines")
    @classmethod
    def _distinct_skus(cls, lines: list[OrderLineRequest]) -> list[OrderLineRequest]:
        seen: set[str] = set()
        for line in lines:
            if line.sku in seen:
                raise ValueError(f"sku {line.sku} appears twice; add the quantities")
            seen.add(line.sku)
        return lines


class CancelOrderRequest(Input):
    reason: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f<>]+$")]
    """Kept on the ERP order (its rejection text holds 120 characters, ours come first)."""


class CreateTicketRequest(Input):
    customer_id: CustomerId
    subject: Annotated[str, Field(min_length=1, max_length=150, pattern=r"^[^\x00-\x1f<>]+$")]
    body: Annotated[str, Field(min_length=1, max_length=10_000)]
    priority: TicketPriority | None = None


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErpSection(Output):
    customer: ErpCustomer | None = None
    open_orders: list[Order] = Field(default_factory=list)


class BillingSection(Output):
    customer: BillingCustomer | None = None
    invoices: list[Invoice] = Field(default_factory=list)
    payments: list[Payment] = Field(default_factory=list)
    balance_due: Decimal = Decimal(0)
    payment_status: str = "none"
    """none | paid | outstanding | overdue"""


class SupportSection(Output):
    user: SupportUser | None = None
    tickets: list[Ticket] = Field(default_factory=list)
    open_tickets: int = 0


class MarketingSection(Output):
    contact: MarketingContact | None = None
    engagement: Engagement | None = None
    lead_score: int | None = None
    lifecycle_stage: str | None = None


class Customer360(Output):
    """One customer across every system; ``unavailable`` names the systems that did not answer."""

    id: str
    customer: Customer
    contact: Contact
    account: Account | None = None
    erp: ErpSection | None = None
    billing: BillingSection | None = None
    support: SupportSection | None = None
    marketing: MarketingSection | None = None
    partial: bool = False
    unavailable: list[str] = Field(default_factory=list)


class PlacedOrder(Output):
    id: str
    customer_id: str
    channel: str
    status: OrderStatus
    currency: str
    total: Decimal | None
    lines: list[OrderLine]
    reservation_id: str
    invoice_id: str
    activity_id: str | None = None
    created_at: datetime | None = None


class CancelledOrder(Output):
    """What cancelling did in each system; ``refund_needed`` when the invoice was already paid
    (it is left as it is: refunds are not automated, someone must issue one in billing)."""

    id: str
    customer_id: str | None = None
    status: OrderStatus
    reason: str
    invoice_id: str | None = None
    invoice_status: InvoiceStatus | None = None
    reservation_id: str | None = None
    reservation_status: ReservationStatus | None = None
    refund_needed: bool = False
    refund_amount: Decimal | None = None
    activity_id: str | None = None
    notes: list[str] = Field(default_factory=list)


class OrderDetail(Output):
    order: Order
    invoice: Invoice | None = None
    reservation: Reservation | None = None
    stock: list[StockLevel] = Field(default_factory=list)
    partial: bool = False
    unavailable: list[str] = Field(default_factory=list)


class CloseWonResult(Output):
    opportunity: Opportunity
    invoice: Invoice
    nurture_stopped: bool


class LeadCaptured(Output):
    lead: Lead
    account_id: str | None = None
    score: int
    marketing_contact_id: str | None = None
    nurture_list_id: str | None = None


class TicketContext(Output):
    ticket: Ticket
    requester: SupportUser | None = None
    customer_id: str | None = None
    contact: Contact | None = None
    orders: list[Order] = Field(default_factory=list)
    invoices: list[Invoice] = Field(default_factory=list)
    balance_due: Decimal = Decimal(0)
    payment_status: str = "none"
    partial: bool = False
    unavailable: list[str] = Field(default_factory=list)


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as JSON-ready data (Decimals as strings, datetimes ISO), for stored responses."""
    data: dict[str, Any] = model.model_dump(mode="json")
    return data
