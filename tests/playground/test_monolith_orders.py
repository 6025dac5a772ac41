"""Placing an order in the monolith: stock, order and payment commit together or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.playground.conftest import csrf_token, log_in

NEW_ORDER = {"customer_email": "dave@example.com", "payment_method": "card",
             "lines": [{"sku": "ESP-001", "quantity": 1}, {"sku": "BNS-1KG", "quantity": 3}]}


def counts(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "legacy.sqlite3") as conn:
        tables = ("orders_order", "orders_orderline", "inventory_reservation", "payments_payment")
        counted = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}
        counted["reserved"] = conn.execute("SELECT sum(reserved) FROM inventory_product").fetchone()[0]
    conn.close()
    return counted


async def test_placing_an_order_reserves_stock_and_records_payment(shop: httpx.AsyncClient, data_dir) -> None:
    before = (await shop.get("/api/inventory/ESP-001/")).json()
    response = await shop.post("/api/orders/", json=NEW_ORDER)
    assert response.status_code == 201
    order = response.json()
    assert response.headers["location"] == f"http://shop.test/api/orders/{order['id']}/"
    assert order["status"] == "paid" and order["total_cents"] == 24900 + 3 * 1890
    assert [line["sku"] for line in order["lines"]] == ["ESP-001", "BNS-1KG"]
    payment = (await shop.get(f"/api/payments/{order['payment_id']}/")).json()
    assert payment == {**payment, "order_id": order["id"], "amount_cents": order["total_cents"], "status": "captured"}
    after = (await shop.get("/api/inventory/ESP-001/")).json()
    assert after["reserved"] == before["reserved"] + 1


async def test_order_short_of_stock_leaves_no_trace(shop: httpx.AsyncClient, data_dir) -> None:
    """The first line reserves fine, the second cannot: nothing of either may remain."""
    before = counts(data_dir)
    response = await shop.post("/api/orders/", json={**NEW_ORDER, "lines": [
        {"sku": "BNS-1KG", "quantity": 1}, {"sku": "ESP-001", "quantity": 10_000}]})
    assert response.status_code == 409 and response.json()["error"] == "insufficient_stock"
    assert counts(data_dir) == before


async def test_order_with_unknown_sku_is_invalid(shop: httpx.AsyncClient, data_dir) -> None:
    before = counts(data_dir)
    response = await shop.post("/api/orders/", json={**NEW_ORDER, "lines": [{"sku": "NOPE-1", "quantity": 1}]})
    assert response.status_code == 400 and "NOPE-1" in response.json()["detail"]
    assert counts(data_dir) == before


async def test_order_form_needs_login_and_csrf_then_redirects_to_the_order(shop: httpx.AsyncClient) -> None:
    await log_in(shop, "alice@example.com", "wonderland")
    form = await shop.get("/orders/new/")
    response = await shop.post("/orders/new/", data={
        "csrfmiddlewaretoken": csrf_token(form), "qty_MLK-FRT": "2", "payment_method": "invoice"})
    assert response.status_code == 302
    detail = await shop.get(response.headers["location"])
    assert "alice@example.com" in detail.text and "awaiting_payment" in detail.text and "Milk frother" in detail.text


async def test_customers_see_only_their_own_order_pages(shop: httpx.AsyncClient) -> None:
    """Order 1 is Carol's: Alice gets a 404, staff get the page."""
    await log_in(shop, "alice@example.com", "wonderland")
    assert (await shop.get("/orders/1/")).status_code == 404
    await log_in(shop, "bob@example.com", "canwefixit")
    assert "carol@example.com" in (await shop.get("/orders/1/")).text
