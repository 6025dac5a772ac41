"""The shipped composite route, /api/order-summary/{id}: one call answered by three sides of the playground."""

from __future__ import annotations

import httpx

from tests.playground.test_through_proxy import Playground, playground  # noqa: F401  (fixture)


def test_order_summary_is_whole_then_partial_with_the_payments_side_stopped(playground: Playground) -> None:
    """The order from orders_service, its payment from payments_service and its shipping from the
    monolith, as each side answers it directly; with payments_service stopped, still a 200 with the
    payment null and listed as partial; an order that does not exist is a 404."""
    direct = {name: httpx.Client(base_url=url, timeout=10) for name, url in playground.direct.items()}
    with playground.browser() as client:
        whole = client.get("/api/order-summary/1")
        assert whole.status_code == 200, whole.text
        assert whole.headers["x-strangler-route"] == "order-summary"
        assert "x-strangler-partial" not in whole.headers
        assert whole.json() == {
            "order": direct["orders"].get("/api/orders/1/").json(),
            "payment": direct["payments"].get("/api/payments/", params={"order_id": 1}).json(),
            "shipping": direct["legacy"].get("/api/shipping/", params={"order_id": 1}).json(),
            "partial": [],
        }
        assert whole.json()["payment"]["count"] >= 1 and whole.json()["order"]["id"] == 1

        missing = client.get("/api/order-summary/999999")
        assert missing.status_code == 404
        assert missing.json()["part"] == "order"

        playground.servers["payments"].stop()
        partial = client.get("/api/order-summary/1")
    assert partial.status_code == 200, partial.text
    assert partial.headers["x-strangler-partial"] == "payment"
    body = partial.json()
    assert body["payment"] is None
    assert body["partial"] == [{"part": "payment", "reason": "connect_error"}]
    assert body["order"] == whole.json()["order"] and body["shipping"] == whole.json()["shipping"]
    for client in direct.values():
        client.close()
