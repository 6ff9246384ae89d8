"""The connectors shipped with Trellis, registered in ``pyproject.toml`` under the
``trellis.connectors`` entry point group like any third-party connector."""

from __future__ import annotations

from ..billing import BillingClient
from ..crm import CrmClient
from ..erp import ErpClient
from ..http import billing as billing_http
from ..http import crm as crm_http
from ..http import erp as erp_http
from ..http import inventory as inventory_http
from ..http import marketing as marketing_http
from ..http import support as support_http
from ..hubspot_crm import HubSpotCrmClient
from ..inventory import InventoryClient
from ..marketing import MarketingClient
from ..support import SupportClient
from .base import Connector

salesforce = Connector(
    name="salesforce",
    roles=("crm",),
    client=CrmClient,
    routes=crm_http.routes,
    sandbox="system_apis.sandbox.crm:create_app",
    summary="Salesforce REST API v60: contacts, accounts, opportunities, tasks, leads",
)
hubspot_crm: Connector[HubSpotCrmClient] = Connector(
    name="hubspot-crm",
    roles=("crm",),
    client=HubSpotCrmClient,
    routes=crm_http.routes,
    sandbox="system_apis.sandbox.hubspot_crm:create_app",
    summary="HubSpot CRM v3 objects: contacts, companies, deals, tasks, associations",
)
sap = Connector(
    name="sap",
    roles=("erp",),
    client=ErpClient,
    routes=erp_http.routes,
    sandbox="system_apis.sandbox.erp:create_app",
    summary="SAP sales and distribution over XML: customers, orders, invoices",
)
stripe = Connector(
    name="stripe",
    roles=("billing",),
    client=BillingClient,
    routes=billing_http.routes,
    sandbox="system_apis.sandbox.billing:create_app",
    summary="Stripe: customers, invoices, payments",
)
zendesk = Connector(
    name="zendesk",
    roles=("support",),
    client=SupportClient,
    routes=support_http.routes,
    sandbox="system_apis.sandbox.support:create_app",
    summary="Zendesk Support: users, tickets, comments",
)
hubspot_marketing = Connector(
    name="hubspot-marketing",
    roles=("marketing",),
    client=MarketingClient,
    routes=marketing_http.routes,
    sandbox="system_apis.sandbox.marketing:create_app",
    summary="HubSpot marketing: contacts, lists, scores, emails, engagement",
)
inventory = Connector(
    name="inventory",
    roles=("inventory",),
    client=InventoryClient,
    routes=inventory_http.routes,
    sandbox="system_apis.sandbox.inventory:create_app",
    summary="The warehouse API: stock levels and reservations",
)
