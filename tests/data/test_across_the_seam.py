"""While orders are split 50/50, an order placed through either side is read through the other.

The monolith and orders_service each write an order with its event in one
transaction; the relay carries OrderCreated across, and the other side's copy
answers within a second, value for value, through the proxy.
"""

from __future__ import annotations

import time

import httpx

import strangler.app  # noqa: F401 - the proxy these tests run in a subprocess: a broken import fails here
from tests.data.conftest import Shop
from tests.support.servers import wait_until

ORDER = {"customer_email": "erin@example.com", "payment_method": "card",
         "lines": [{"sku": "GRN-250", "quantity": 1}, {"sku": "FLT-100", "quantity": 4}]}


def split_config(shop: Shop) -> str:
    return f"""
version: 1
upstreams:
  legacy: {{url: "{shop.url('legacy')}"}}
  orders: {{url: "{shop.url('orders')}"}}
  inventory: {{url: "{shop.url('inventory')}"}}
routes:
  - name: orders
    match: {{path: /api/orders}}
    split: {{orders: 50, legacy: 50}}
    sticky: cohort
  - name: inventory
    match: {{path: /api/inventory}}
    to: inventory
  - name: everything-else
    match: {{path: /}}
    to: legacy
"""


def cohort_clients(proxy_url: str) -> dict[str, httpx.Client]:
    """One visitor per side: each keeps the cohort cookie the proxy gave it, as a browser would."""
    found: dict[str, httpx.Client] = {}
    for _ in range(200):
        client = httpx.Client(base_url=proxy_url, timeout=20)
        side = client.get("/api/orders/1/").headers["x-strangler-upstream"]
        assert "strangler_cohort" in client.cookies
        if side in found:
            client.close()
        else:
            found[side] = client
        if len(found) == 2:
            return found
    raise AssertionError(f"no cohort found for both sides: {sorted(found)}")


def read_within_a_second(client: httpx.Client, order: dict, side: str) -> float:
    """Poll `client` until it returns `order` exactly; the seconds that took."""
    started = time.monotonic()
    seen: dict = {}

    def arrived() -> bool:
        response = client.get(f"/api/orders/{order['id']}/")
        seen["last"] = (response.status_code, response.headers.get("x-strangler-upstream"), response.text)
        assert response.headers["x-strangler-upstream"] == side
        return response.status_code == 200 and response.json() == order

    try:
        wait_until(arrived, timeout_s=1.0, interval_s=0.02, what=f"order {order['id']} on {side}")
    except AssertionError:
        raise AssertionError(f"{side} answers {seen.get('last')}, not {order}") from None
    return time.monotonic() - started


def test_an_order_placed_on_either_side_is_read_through_the_other(start_shop, start_proxy) -> None:
    shop = start_shop()
    proxy = start_proxy(split_config(shop))
    visitors = cohort_clients(proxy.url)

    placed = visitors["legacy"].post("/api/orders/", json=ORDER)
    assert placed.status_code == 201 and placed.headers["x-strangler-upstream"] == "legacy"
    assert placed.json()["id"] < 1_000_000_000
    read_within_a_second(visitors["orders"], placed.json(), "orders")

    placed = visitors["orders"].post("/api/orders/", json={**ORDER, "payment_method": "invoice"})
    assert placed.status_code == 201, placed.text
    assert placed.headers["x-strangler-upstream"] == "orders"
    order = placed.json()
    assert order["id"] > 1_000_000_000 and order["status"] == "awaiting_payment"
    assert placed.headers["location"] == f"{proxy.url}/api/orders/{order['id']}/"
    read_within_a_second(visitors["legacy"], order, "legacy")

    # Stock and payments agree too: the saga reserved in inventory_service and charged
    # through the monolith's payments API; each side has the other's rows.
    def stock(side: str, table: str) -> list[tuple]:
        return shop.query(side, f"SELECT sku, on_hand, reserved FROM {table} ORDER BY sku")

    wait_until(lambda: stock("legacy", "inventory_product") == stock("inventory", "products"), timeout_s=2,
               what="the same stock on both sides")
    payments = "SELECT id, order_id, amount_cents, status FROM {} WHERE order_id >= 25 ORDER BY id"
    wait_until(lambda: shop.query("legacy", payments.format("payments_payment"))
               == shop.query("payments", payments.format("payments")), timeout_s=2, what="the same payments")
    assert len(shop.query("payments", payments.format("payments"))) == 2
    for client in visitors.values():
        client.close()
