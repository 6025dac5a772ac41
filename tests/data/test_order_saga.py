"""The order saga in orders_service: reserve stock, charge, confirm; undo in reverse when a step fails.

The payments side is payments_service with injected faults; stock is in
inventory_service. Every count is read from the services' own databases.
"""

from __future__ import annotations

import logging
import threading

import httpx
import pytest

from tests.data.conftest import Shop, metric, serving
from tests.support.servers import ThreadedServer, wait_until

ORDER = {"customer_email": "frank@example.com", "payment_method": "card",
         "lines": [{"sku": "ESP-001", "quantity": 1}, {"sku": "MLK-FRT", "quantity": 2}]}
TOTAL_CENTS = 24900 + 2 * 3490


def reserved(shop: Shop, side: str = "inventory") -> dict[str, int]:
    table = "products" if side == "inventory" else "inventory_product"
    return dict(shop.query(side, f"SELECT sku, reserved FROM {table} WHERE sku IN ('ESP-001', 'MLK-FRT')"))


def payments_for(shop: Shop, order_id: int) -> list[tuple]:
    return shop.query("payments", "SELECT amount_cents, status FROM payments WHERE order_id = ?", (order_id,))


def saga_state(shop: Shop, order_id: int) -> str:
    return shop.query("orders", "SELECT state FROM sagas WHERE order_id = ?", (order_id,))[0][0]


def test_a_placed_order_reserves_charges_and_confirms(start_shop) -> None:
    shop = start_shop(payments="payments")
    before = reserved(shop)
    with shop.client("orders") as orders:
        placed = orders.post("/api/orders/", json=ORDER)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "paid" and order["total_cents"] == TOTAL_CENTS
    assert reserved(shop) == {"ESP-001": before["ESP-001"] + 1, "MLK-FRT": before["MLK-FRT"] + 2}
    assert payments_for(shop, order["id"]) == [(TOTAL_CENTS, "captured")]
    assert order["payment_id"] > 1_000_000_000 and saga_state(shop, order["id"]) == "completed"
    assert metric(shop.get("orders", "/metrics").text, "saga_completed_total", outcome="completed") == 1


@pytest.mark.parametrize(("fault", "status", "error"), [("decline_next", 402, "payment_failed"),
                                                        ("fail_next", 503, "unavailable")])
def test_a_failed_payment_releases_the_stock_and_cancels_the_order(start_shop, fault: str, status: int,
                                                                   error: str) -> None:
    """Declined at once, or unavailable through every retry: either way nothing stays reserved or charged."""
    shop = start_shop(payments="payments")
    setattr(shop.apps["payments"].state.faults, fault, 1000)
    before, legacy_before = reserved(shop), reserved(shop, "legacy")
    with shop.client("orders") as orders:
        placed = orders.post("/api/orders/", json=ORDER)
        assert placed.status_code == status and placed.json()["error"] == error, placed.text
        order_id = int(placed.json()["detail"].split()[1])
        assert orders.get(f"/api/orders/{order_id}/").json()["status"] == "cancelled"
    assert reserved(shop) == before
    assert payments_for(shop, order_id) == []
    assert saga_state(shop, order_id) == "compensated"
    released = shop.query("inventory", "SELECT count(*) FROM reservations WHERE order_id = ? AND released_at"
                                       " IS NOT NULL", (order_id,))
    assert released == [(2,)]                       # both lines were held, then given back
    text = shop.get("orders", "/metrics").text
    assert metric(text, "saga_completed_total", outcome="compensated") == 1
    # The monolith hears of all of it: a cancelled order, and its stock as it was.
    wait_until(lambda: shop.query("legacy", "SELECT status FROM orders_order WHERE id = ?", (order_id,))
               == [("cancelled",)], timeout_s=2, what="the cancelled order in the monolith")
    wait_until(lambda: reserved(shop, "legacy") == legacy_before, timeout_s=2, what="the monolith's stock")


def test_out_of_stock_cancels_and_releases_what_was_reserved(start_shop) -> None:
    shop = start_shop(payments="payments")
    before = reserved(shop)
    with shop.client("orders") as orders:
        placed = orders.post("/api/orders/", json={**ORDER, "lines": [{"sku": "ESP-001", "quantity": 1},
                                                                      {"sku": "MLK-FRT", "quantity": 10_000}]})
    assert placed.status_code == 409 and placed.json()["error"] == "insufficient_stock"
    assert "MLK-FRT" in placed.json()["detail"]
    assert reserved(shop) == before
    assert shop.apps["payments"].state.faults.charges_received == 0


def test_a_charge_retried_after_a_timeout_charges_once(start_shop) -> None:
    """The first charge commits but answers too late; the retry, with the same key, gets that payment back."""
    shop = start_shop(payments="payments", call_timeout_s=0.4)
    faults = shop.apps["payments"].state.faults
    faults.slow_next, faults.slow_answer_s = 1, 1.2
    with shop.client("orders") as orders:
        placed = orders.post("/api/orders/", json=ORDER)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert faults.charges_received == 2
    assert payments_for(shop, order["id"]) == [(TOTAL_CENTS, "captured")]
    assert order["status"] == "paid"
    text = shop.get("orders", "/metrics").text
    assert metric(text, "service_client_attempts_total", peer="payments", outcome="timeout") == 1


def test_a_saga_that_can_neither_finish_nor_compensate_is_dead_lettered_and_can_be_retried(start_shop,
                                                                                           caplog) -> None:
    """The payment is declined, and inventory is gone by then: the stock cannot be released. People must know,
    and once inventory is back an operator retries the dead saga: its compensation runs again, once."""
    shop = start_shop(payments="payments", saga_compensation_attempts=2, call_attempts=1)
    before = reserved(shop)
    faults = shop.apps["payments"].state.faults
    faults.hold = threading.Event()
    placing = threading.Thread(target=lambda: httpx.post(shop.url("orders") + "/api/orders/", json=ORDER, timeout=20))
    with caplog.at_level(logging.WARNING, logger="strangler.saga"):
        placing.start()
        wait_until(lambda: faults.charges_received == 1, timeout_s=5, what="the charge step")
        shop.servers["inventory"].stop()
        faults.decline_next = 1
        faults.hold.set()
        placing.join(timeout=20)
        wait_until(lambda: shop.get("orders", "/sagas/?state=dead").json()["count"] == 1, timeout_s=10,
                   what="a dead saga")
    [saga] = shop.get("orders", "/sagas/?state=dead").json()["sagas"]
    assert saga["failed_in"] == "stock_reserved" and saga["failure_kind"] == "payment_declined"
    [letter] = shop.get("orders", "/outbox/dead-letters/").json()["dead_letters"]
    assert letter["kind"] == "saga" and letter["ref"] == str(saga["order_id"])
    assert letter["reason"].startswith("compensation failed 2 times, the last: inventory: ")
    assert f"saga.dead_letter order={saga['order_id']} failed_in=stock_reserved reason=compensation failed" \
        in caplog.text
    text = shop.get("orders", "/metrics").text
    assert metric(text, "saga_dead_letters_total") == 1 and metric(text, "saga_completed_total", outcome="dead") == 1
    assert shop.query("orders", "SELECT status FROM orders WHERE id = ?", (saga["order_id"],)) == [("pending",)]

    assert shop.post("orders", "/sagas/999999/retry/").status_code == 404
    shop.servers["inventory"] = restart(shop.servers["inventory"], shop.apps["inventory"])
    retried = shop.post("orders", f"/sagas/{saga['order_id']}/retry/")
    assert retried.status_code == 202 and retried.json()["state"] == "compensating"
    wait_until(lambda: saga_state(shop, saga["order_id"]) == "compensated", timeout_s=10, what="the retried saga")
    assert shop.query("orders", "SELECT status FROM orders WHERE id = ?", (saga["order_id"],)) == [("cancelled",)]
    assert reserved(shop) == before
    assert shop.get("orders", "/outbox/dead-letters/").json()["count"] == 0      # the letter is marked replayed
    assert shop.post("orders", f"/sagas/{saga['order_id']}/retry/").status_code == 404   # not dead any more


def restart(server: ThreadedServer, app) -> ThreadedServer:
    """The same app again on the same port, as a service comes back after an outage."""
    again = serving(app)
    again.port, again.url = server.port, server.url
    again.server.config.port = server.port
    return again.start()
