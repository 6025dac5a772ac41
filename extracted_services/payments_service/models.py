"""Payments in the payments service's own database: charges and refunds, each at most once per key."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from domain_events.outbox import SCHEMA as OUTBOX_SCHEMA
from domain_events.outbox import now_iso, record_event
from extracted_services.common.db import Database, next_service_id

MIGRATIONS = [
    (
        "0001_payments",
        """
        CREATE TABLE payments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id INTEGER NOT NULL,
            amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
            currency TEXT NOT NULL,
            method TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX payments_order ON payments (order_id)
        """,
    ),
    (
        "0002_idempotent_charges",
        """
        ALTER TABLE payments ADD COLUMN idempotency_key TEXT;
        CREATE UNIQUE INDEX payments_idempotency_key ON payments (idempotency_key);
        CREATE TABLE voided_charge_keys (
            idempotency_key TEXT PRIMARY KEY,
            voided_at TEXT NOT NULL
        )
        """,
    ),
    ("0003_outbox", OUTBOX_SCHEMA),
]
TABLES = ("voided_charge_keys", "payments")
METHODS = ("card", "invoice")
CURRENCY = "EUR"

Payment = dict[str, Any]
_PAYMENT = "SELECT id, order_id, amount_cents, currency, method, status, created_at FROM payments"


class UnknownPayment(LookupError):
    def __init__(self, payment_id: int) -> None:
        super().__init__(f"No payment with id {payment_id}")


class KeyReused(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key} was already used for a different charge")


class ChargeVoided(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"The charge with Idempotency-Key {key} was refunded; use a new key")


def list_payments(database: Database, *, order_id: int | None = None) -> list[Payment]:
    where, params = ("WHERE order_id = ?", (order_id,)) if order_id is not None else ("", ())
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(f"{_PAYMENT} {where} ORDER BY id", params)]


def get_payment(database: Database, payment_id: int) -> Payment:
    if not 0 < payment_id < 2**63:  # SQLite integers are 64-bit; larger ids cannot exist
        raise UnknownPayment(payment_id)
    with database.reading() as conn:
        row = conn.execute(f"{_PAYMENT} WHERE id = ?", (payment_id,)).fetchone()
    if row is None:
        raise UnknownPayment(payment_id)
    return dict(row)


def charge(database: Database, *, order_id: int, amount_cents: int, currency: str, method: str,
           idempotency_key: str) -> tuple[Payment, bool]:
    """Take a payment (cards capture at once, invoices wait) with its event; (payment, replayed).

    The key makes a retried charge return the first payment instead of charging again.
    """
    with database.transaction() as conn:
        earlier = conn.execute("SELECT id, order_id, amount_cents, currency, method FROM payments"
                               " WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        if earlier is not None:
            if tuple(earlier)[1:] != (order_id, amount_cents, currency, method):
                raise KeyReused(idempotency_key)
            return dict(conn.execute(f"{_PAYMENT} WHERE id = ?", (earlier["id"],)).fetchone()), True
        if conn.execute("SELECT 1 FROM voided_charge_keys WHERE idempotency_key = ?", (idempotency_key,)).fetchone():
            raise ChargeVoided(idempotency_key)
        payment = {"id": next_service_id(conn, "payments"), "order_id": order_id, "amount_cents": amount_cents,
                   "currency": currency, "method": method, "status": "captured" if method == "card" else "pending",
                   "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        conn.execute("INSERT INTO payments (id, order_id, amount_cents, currency, method, status, created_at,"
                     " idempotency_key) VALUES (:id, :order_id, :amount_cents, :currency, :method, :status,"
                     " :created_at, :key)", {**payment, "key": idempotency_key})
        record_event(conn, "PaymentCaptured" if payment["status"] == "captured" else "PaymentPending",
                     f"payment:{payment['id']}", {"payment": {**payment, "idempotency_key": idempotency_key}})
        return payment, False


def refund(database: Database, charge_key: str) -> Payment | None:
    """Refund the charge made under this key, with PaymentRefunded; None if there was none.

    Either way the key is finished: a charge arriving later under it is refused, so a
    late retry can never charge an order whose saga already gave up on it.
    """
    with database.transaction() as conn:
        row = conn.execute(f"{_PAYMENT} WHERE idempotency_key = ?", (charge_key,)).fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO voided_charge_keys (idempotency_key, voided_at) VALUES (?, ?)",
                         (charge_key, now_iso()))
            return None
        if row["status"] != "refunded":
            conn.execute("UPDATE payments SET status = 'refunded' WHERE id = ?", (row["id"],))
            record_event(conn, "PaymentRefunded", f"payment:{row['id']}",
                         {"payment_id": row["id"], "order_id": row["order_id"]})
        return dict(conn.execute(f"{_PAYMENT} WHERE id = ?", (row["id"],)).fetchone())


# Events from the monolith: its payments, applied to our copy (no events of our own: no echo).

def apply_payment_recorded(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    p = payload["payment"]
    if conn.execute("SELECT 1 FROM payments WHERE id = ?", (p["id"],)).fetchone():
        return      # already here (copied by import-from-legacy)
    conn.execute("INSERT INTO payments (id, order_id, amount_cents, currency, method, status, created_at,"
                 " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (p["id"], p["order_id"], p["amount_cents"], p["currency"], p["method"], p["status"],
                  p["created_at"], p.get("idempotency_key")))


def apply_payment_refunded(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    conn.execute("UPDATE payments SET status = 'refunded' WHERE id = ?", (payload["payment_id"],))


EVENT_HANDLERS = {"PaymentCaptured": apply_payment_recorded, "PaymentPending": apply_payment_recorded,
                  "PaymentRefunded": apply_payment_refunded}
