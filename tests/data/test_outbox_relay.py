"""Events leave through the outbox: at least once, in order per aggregate, applied exactly once in effect."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from domain_events import outbox
from domain_events.metrics import EventMetrics
from domain_events.relay import OutboxRelay
from extracted_services.common import db
from tests.data.conftest import AUTH, FAST, Shop, metric, serving
from tests.support.servers import wait_until

ORDER = {"customer_email": "heidi@example.com", "payment_method": "card", "lines": [{"sku": "CUP-SET", "quantity": 1}]}
ORDERS_PLACED = 5


def orders_in(shop: Shop, side: str, first_id: int) -> list[tuple]:
    table = "orders" if side == "orders" else "orders_order"
    return shop.query(side, f"SELECT id, status, total_cents FROM {table} WHERE id >= ? ORDER BY id", (first_id,))


def stock(shop: Shop) -> tuple[list[tuple], list[tuple]]:
    return (shop.query("legacy", "SELECT sku, reserved FROM inventory_product ORDER BY sku"),
            shop.query("inventory", "SELECT sku, reserved FROM products ORDER BY sku"))


def delivered(shop: Shop) -> int:
    return sum(s["delivered"] for s in shop.get("legacy", "/outbox/").json()["subscribers"])


def test_events_written_while_the_relay_is_stopped_arrive_once_it_starts(start_shop) -> None:
    shop = start_shop()
    assert shop.post("legacy", "/outbox/relay/stop/").json()["relay"] == "stopped"
    with shop.client("legacy") as legacy:
        placed = [legacy.post("/api/orders/", json=ORDER).json() for _ in range(ORDERS_PLACED)]
    first_id = placed[0]["id"]
    status = shop.get("legacy", "/outbox/").json()
    assert status["events"] == 3 * ORDERS_PLACED          # OrderCreated, StockReserved, PaymentCaptured each
    assert orders_in(shop, "orders", first_id) == []      # nothing crossed yet

    assert shop.post("legacy", "/outbox/relay/start/").json()["relay"] == "running"
    wait_until(lambda: orders_in(shop, "orders", first_id) == orders_in(shop, "legacy", first_id), timeout_s=3,
               what="every order on orders_service")
    wait_until(lambda: delivered(shop) == 3 * 3 * ORDERS_PLACED, timeout_s=3, what="every event delivered to all three")
    legacy_stock, service_stock = stock(shop)
    assert legacy_stock == service_stock
    assert shop.query("payments", "SELECT count(*) FROM payments WHERE order_id >= ?", (first_id,)) == [(5,)]

    # The relay forgets what it delivered, as if it died between posting and recording: every
    # event goes out again, and every consumer recognises it by its id and changes nothing.
    shop.post("legacy", "/outbox/relay/stop/")
    forget_deliveries(shop)
    shop.post("legacy", "/outbox/relay/start/")
    wait_until(lambda: delivered(shop) == 3 * 3 * ORDERS_PLACED, timeout_s=3, what="every event delivered again")
    assert stock(shop) == (legacy_stock, service_stock)
    assert len(orders_in(shop, "orders", first_id)) == ORDERS_PLACED
    assert shop.query("payments", "SELECT count(*) FROM payments WHERE order_id >= ?", (first_id,)) == [(5,)]
    text = shop.get("orders", "/metrics").text
    assert metric(text, "inbox_events_total", type="OrderCreated", outcome="applied") == ORDERS_PLACED
    assert metric(text, "inbox_events_total", type="OrderCreated", outcome="duplicate") == ORDERS_PLACED
    assert shop.get("legacy", "/outbox/dead-letters/").json()["count"] == 0


def forget_deliveries(shop: Shop) -> None:
    conn = sqlite3.connect(shop.data_dir / "legacy.sqlite3")
    with conn:
        conn.execute("DELETE FROM outbox_deliveries")
    conn.close()


class Subscriber:
    """A consumer that records what it gets, failing on command."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.fail_first = 0                 # answer 503 to this many deliveries
        self.reject_type: str | None = None  # answer 422 to events of this type
        self.lock = threading.Lock()

    async def events(self, request: Request) -> JSONResponse:
        event = json.loads(await request.body())
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return JSONResponse({"error": "unavailable", "detail": "try later"}, status_code=503)
            if event["type"] == self.reject_type:
                return JSONResponse({"error": "event_rejected", "detail": "no such product here"}, status_code=422)
            self.received.append(event)
        return JSONResponse({"outcome": "applied"})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/events/", self.events, methods=["POST"])])


def outbox_database(tmp_path: Path) -> db.Database:
    database = db.Database(tmp_path / "outbox.sqlite3")
    db.migrate(database, [("0001_outbox", outbox.SCHEMA)])
    return database


def write_events(database: db.Database, events: list[tuple[str, str]]) -> None:
    for number, (type_, aggregate) in enumerate(events):
        with database.transaction() as conn:
            outbox.record_event(conn, type_, aggregate, {"n": number})


async def relay_until(relay: OutboxRelay, done, what: str, timeout_s: float = 5.0) -> None:
    relay.start()
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
    finally:
        await relay.close()


async def test_a_failing_head_holds_back_its_aggregate_and_retries_with_backoff(tmp_path: Path) -> None:
    database = outbox_database(tmp_path)
    subscriber = Subscriber()
    subscriber.fail_first = 2
    write_events(database, [("A", "order:1"), ("B", "order:1"), ("C", "order:2"), ("D", "order:1")])
    with serving(subscriber.app()) as server:
        metrics = EventMetrics()
        relay = OutboxRelay(database, source="test", metrics=metrics,
                            wiring=FAST.with_(publish_to=(("sub", server.url),), relay_interval_s=0.02))
        await relay_until(relay, lambda: metric(_text(metrics), "outbox_events_delivered_total", subscriber="sub") == 4,
                          "all four events delivered")
    per_aggregate = {}
    for event in subscriber.received:
        per_aggregate.setdefault(event["aggregate"], []).append(event["type"])
    assert per_aggregate == {"order:1": ["A", "B", "D"], "order:2": ["C"]}
    assert metric(_text(metrics), "outbox_delivery_failures_total", subscriber="sub", reason="http_503") == 2


async def test_events_that_cannot_be_delivered_become_dead_letters_with_a_reason(tmp_path: Path, caplog) -> None:
    """Rejected (a 4xx) at once; unreachable after relay_max_attempts; either way the rest carry on."""
    database = outbox_database(tmp_path)
    subscriber = Subscriber()
    subscriber.reject_type = "StockReserved"
    write_events(database, [("StockReserved", "product:X"), ("StockReleased", "product:X"), ("OrderCreated", "order:7")])
    metrics = EventMetrics()
    with serving(subscriber.app()) as server:
        wiring = FAST.with_(publish_to=(("sub", server.url), ("gone", "http://127.0.0.1:9")), relay_interval_s=0.02,
                            relay_max_attempts=3, relay_backoff_initial_s=0.01, relay_backoff_max_s=0.02,
                            breaker_recovery_timeout_s=0.05)
        relay = OutboxRelay(database, source="test", metrics=metrics, wiring=wiring)
        with caplog.at_level(logging.ERROR, logger="strangler.outbox"):
            await relay_until(relay, lambda: metric(_text(metrics), "outbox_dead_letters_total", subscriber="gone") == 3,
                              "three dead letters for the unreachable subscriber")
    assert sorted(event["type"] for event in subscriber.received) == ["OrderCreated", "StockReleased"]
    with database.reading() as conn:
        letters = outbox.list_dead_letters(conn)
    reasons = {(letter["subscriber"], letter["detail"]["type"]): letter["reason"] for letter in letters}
    assert reasons[("sub", "StockReserved")] == "sub rejected it with HTTP 422: no such product here"
    assert all(reasons[("gone", kind)].startswith("3 failed attempts, the last: ")
               for kind in ("StockReserved", "StockReleased", "OrderCreated"))
    assert len(letters) == 4
    assert metric(_text(metrics), "outbox_dead_letters_total", subscriber="sub") == 1
    assert "outbox.dead_letter event=" in caplog.text and "reason=sub rejected it with HTTP 422" in caplog.text

    # Replayed once the subscriber can take it, the event arrives.
    subscriber.reject_type = None
    with database.transaction() as conn:
        letter_id = next(letter["id"] for letter in letters if letter["subscriber"] == "sub")
        assert outbox.replay_dead_letter(conn, letter_id) is not None
    with serving(subscriber.app()) as server:
        relay = OutboxRelay(database, source="test", metrics=metrics,
                            wiring=FAST.with_(publish_to=(("sub", server.url),), relay_interval_s=0.02))
        await relay_until(relay, lambda: metric(_text(metrics), "outbox_events_delivered_total", subscriber="sub") == 3,
                          "the replayed event delivered")
    assert subscriber.received[-1]["type"] == "StockReserved"


def _text(metrics: EventMetrics) -> str:
    return metrics.render()[0].decode()


def test_internal_endpoints_refuse_requests_through_the_proxy_and_without_the_token(start_shop) -> None:
    """/events/, /outbox/ and /metrics are for the other sides and operators, not for the public."""
    shop = start_shop(sides=("legacy",))
    assert shop.get("legacy", "/outbox/").status_code == 200
    assert httpx.get(shop.url("legacy") + "/outbox/").status_code == 401
    forwarded = httpx.get(shop.url("legacy") + "/metrics", headers={"X-Forwarded-For": "203.0.113.9", **AUTH})
    assert forwarded.status_code == 404
    event = {"event_id": "e1", "type": "OrderShipped", "aggregate": "order:1", "source": "someone",
             "occurred_at": "now", "payload": {"order_id": 1}}
    assert httpx.post(shop.url("legacy") + "/events/", json=event).status_code == 401


# Retention: what every subscriber acknowledged, and processed ids, do not pile up forever.

def _age(database: db.Database, table: str, column: str, when: str, where: str = "1") -> None:
    with database.transaction() as conn:
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (when,))


def test_prune_removes_only_events_every_subscriber_acknowledged_and_old_processed_ids(tmp_path: Path) -> None:
    database = outbox_database(tmp_path)
    write_events(database, [("A", "order:1"), ("B", "order:2"), ("C", "order:3"), ("D", "order:4")])
    with database.transaction() as conn:
        seqs = [row[0] for row in conn.execute("SELECT id FROM outbox_events ORDER BY id")]
        def mark(seq: int, subscriber: str, status: str) -> None:
            conn.execute("INSERT INTO outbox_deliveries (event_seq, subscriber, status, updated_at) VALUES (?, ?, ?, ?)",
                         (seq, subscriber, status, outbox.now_iso()))
        for seq in seqs:
            mark(seq, "orders", "delivered")
        mark(seqs[0], "inventory", "delivered")     # A: both acknowledged, old: goes
        mark(seqs[2], "inventory", "dead")          # C: dead for one: kept for its replay
        mark(seqs[3], "inventory", "delivered")     # D: both acknowledged but recent: kept
        for number, when in enumerate(("2000-01-01T00:00:00.000+00:00", "2999-01-01T00:00:00.000+00:00")):
            conn.execute("INSERT INTO processed_events VALUES (?, 'X', 'legacy', 'applied', ?)", (f"id{number}", when))
    _age(database, "outbox_events", "occurred_at", "2000-01-01T00:00:00.000+00:00", f"id IN ({seqs[0]}, {seqs[1]}, {seqs[2]})")

    with database.transaction() as conn:
        assert outbox.prune(conn, ["orders", "inventory"], before="2020-01-01T00:00:00.000+00:00") == (1, 1)
    with database.reading() as conn:
        assert [row[0] for row in conn.execute("SELECT type FROM outbox_events ORDER BY id")] == ["B", "C", "D"]
        assert conn.execute("SELECT count(*) FROM outbox_deliveries WHERE event_seq = ?", (seqs[0],)).fetchone()[0] == 0
        assert [row[0] for row in conn.execute("SELECT event_id FROM processed_events")] == ["id1"]


async def test_the_relay_prunes_what_it_delivered_and_never_sends_it_again(tmp_path: Path) -> None:
    database = outbox_database(tmp_path)
    subscriber = Subscriber()
    write_events(database, [("A", "order:1"), ("B", "order:1"), ("C", "order:2")])
    with serving(subscriber.app()) as server:
        metrics = EventMetrics()
        relay = OutboxRelay(database, source="test", metrics=metrics,
                            wiring=FAST.with_(publish_to=(("sub", server.url),), relay_interval_s=0.02,
                                              retention_s=0.0, prune_interval_s=0.0))

        def pruned() -> bool:
            with database.reading() as conn:
                return outbox.total_events(conn) == 0
        await relay_until(relay, pruned, "every delivered event pruned")
    types = [event["type"] for event in subscriber.received]
    assert sorted(types) == ["A", "B", "C"] and types.index("A") < types.index("B")    # once each, in order per order
    assert metric(_text(metrics), "outbox_pruned_total", what="events") == 3
