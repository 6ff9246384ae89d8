"""All system API clients of one gateway worker, made from config and started in its lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.routing import BaseRoute

from .billing import BillingClient
from .client import BackendClient
from .config import BACKEND_NAMES, BackendConfig
from .crm import CrmClient
from .erp import ErpClient
from .http import billing as billing_http
from .http import crm as crm_http
from .http import erp as erp_http
from .http import inventory as inventory_http
from .http import marketing as marketing_http
from .http import support as support_http
from .inventory import InventoryClient
from .marketing import MarketingClient
from .support import SupportClient


@dataclass(frozen=True, slots=True)
class SystemApis:
    crm: CrmClient
    erp: ErpClient
    billing: BillingClient
    support: SupportClient
    marketing: MarketingClient
    inventory: InventoryClient

    @classmethod
    def from_config(
        cls, backends: Mapping[str, BackendConfig], url_of: Callable[[str], str]
    ) -> SystemApis:
        return cls(
            crm=CrmClient(backends["crm"], url_of("crm")),
            erp=ErpClient(backends["erp"], url_of("erp")),
            billing=BillingClient(backends["billing"], url_of("billing")),
            support=SupportClient(backends["support"], url_of("support")),
            marketing=MarketingClient(backends["marketing"], url_of("marketing")),
            inventory=InventoryClient(backends["inventory"], url_of("inventory")),
        )

    def all(self) -> dict[str, BackendClient]:
        return {name: getattr(self, name) for name in BACKEND_NAMES}

    async def start(self) -> None:
        for client in self.all().values():
            await client.start()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.all().values()), return_exceptions=True)

    async def probe(self, timeout_s: float = 1.0) -> dict[str, str | None]:
        """Each backend's health: None when it answers, else why not. Probed concurrently."""
        clients = self.all()
        results = await asyncio.gather(*(c.ping(timeout_s) for c in clients.values()))
        return dict(zip(clients, results, strict=True))

    def routes(self) -> dict[str, list[BaseRoute]]:
        """The canonical HTTP views of each backend, to be mounted at /system/v1/{backend}."""
        return {
            "crm": crm_http.routes(self.crm),
            "erp": erp_http.routes(self.erp),
            "billing": billing_http.routes(self.billing),
            "support": support_http.routes(self.support),
            "marketing": marketing_http.routes(self.marketing),
            "inventory": inventory_http.routes(self.inventory),
        }
