"""The product catalogue as sellers see it: price and availability, never cost."""

from __future__ import annotations

from system_apis.errors import BackendNotFound

from .errors import NotFound
from .models import StockLevel
from .service import ProcessApis
from .tracing import step

__all__ = ["catalog_item"]


async def catalog_item(apis: ProcessApis, sku: str) -> StockLevel:
    with step("inventory.get_stock"):
        try:
            return await apis.systems.inventory.get_stock(sku)
        except BackendNotFound:
            raise NotFound("sku", sku) from None
