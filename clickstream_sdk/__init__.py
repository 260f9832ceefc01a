"""Python SDK for clickstream: send e-commerce events to the gateway.

    from clickstream_sdk import Client, Product

    with Client("WRITE_KEY", url="http://127.0.0.1:8080") as client:
        client.product_view(Product(product_id="sku-1", price=19.9, currency="EUR"),
                            anonymous_id="a-123")

`Client` sends from a background thread, `AsyncClient` from an asyncio task. See README.md.
"""

from clickstream_contract.event import App, Campaign, Context, Device, Event, Order, Page, Product
from clickstream_sdk.async_client import AsyncClient
from clickstream_sdk.buffer import Stats
from clickstream_sdk.client import Client
from clickstream_sdk.delivery import Backoff
from clickstream_sdk.events import build_event

__all__ = [
    "App",
    "AsyncClient",
    "Backoff",
    "Campaign",
    "Client",
    "Context",
    "Device",
    "Event",
    "Order",
    "Page",
    "Product",
    "Stats",
    "build_event",
]
