"""Payments taken for orders: inside the order's transaction, or through the payments API (the order saga).

Every payment records PaymentCaptured (cards) or PaymentPending (invoices) in the same transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from domain_events.outbox import now_iso, record_event
from legacy_monolith.db import Database, next_id

MIGRATIONS = [
    (
        "0001_initial",
        """
        CREATE TABLE payments_payment (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id INTEGER NOT NULL,
            amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
            currency TEXT NOT NULL,
            method TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX payments_payment_order ON payments_payment (order_id)
        """,
    ),
    (
        "0002_idempotent_charges",
        """
        ALTER TABLE payments_payment ADD COLUMN idempotency_key TEXT;
        CREATE UNIQUE INDEX payments_payment_idempotency_key ON payments_payment (idempotency_key);
        CREATE TABLE payments_voidedchargekey (
            idempotency_key TEXT PRIMARY KEY,
            voided_at TEXT NOT NULL
        )
        """,
    ),
]

METHODS = ("card", "invoice")
Payment = dict[str, Any]
_PAYMENT = "SELECT id, order_id, amount_cents, currency, method, status, created_at FROM payments_payment"


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


def add_payment(conn: sqlite3.Connection, *, order_id: int, amount_cents: int, currency: str, method: str,
                created_at: str | None = None, idempotency_key: str | None = None) -> Payment:
    """Record a payment inside the caller's transaction. Cards capture at once; invoices wait."""
    if method not in METHODS:
        raise ValueError(f"payment method must be one of {', '.join(METHODS)}")
    payment = {"id": next_id(conn, "payments_payment"), "order_id": order_id, "amount_cents": amount_cents,
               "currency": currency, "method": method, "status": "captured" if method == "card" else "pending",
               "created_at": created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")}
    conn.execute(
        "INSERT INTO payments_payment (id, order_id, amount_cents, currency, method, status, created_at, idempotency_key)"
        " VALUES (:id, :order_id, :amount_cents, :currency, :method, :status, :created_at, :key)",
        {**payment, "key": idempotency_key},
    )
    record_event(conn, "PaymentCaptured" if payment["status"] == "captured" else "PaymentPending",
                 f"payment:{payment['id']}", {"payment": {**payment, "idempotency_key": idempotency_key}})
    return payment


def charge(database: Database, *, order_id: int, amount_cents: int, currency: str, method: str,
           idempotency_key: str) -> tuple[Payment, bool]:
    """The payments API's charge: at most one payment per key; (payment, replayed)."""
    with database.transaction() as conn:
        earlier = conn.execute("SELECT id, order_id, amount_cents, currency, method FROM payments_payment"
                               " WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        if earlier is not None:
            if tuple(earlier)[1:] != (order_id, amount_cents, currency, method):
                raise KeyReused(idempotency_key)
            return dict(conn.execute(f"{_PAYMENT} WHERE id = ?", (earlier["id"],)).fetchone()), True
        if conn.execute("SELECT 1 FROM payments_voidedchargekey WHERE idempotency_key = ?",
                        (idempotency_key,)).fetchone():
            raise ChargeVoided(idempotency_key)
        return add_payment(conn, order_id=order_id, amount_cents=amount_cents, currency=currency, method=method,
                           idempotency_key=idempotency_key), False


def refund(database: Database, charge_key: str) -> Payment | None:
    """Refund the charge made under this key, with PaymentRefunded; None if there was none.

    Either way the key is finished: a charge arriving later under it is refused.
    """
    with database.transaction() as conn:
        row = conn.execute(f"{_PAYMENT} WHERE idempotency_key = ?", (charge_key,)).fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO payments_voidedchargekey (idempotency_key, voided_at) VALUES (?, ?)",
                         (charge_key, now_iso()))
            return None
        if row["status"] != "refunded":
            conn.execute("UPDATE payments_payment SET status = 'refunded' WHERE id = ?", (row["id"],))
            record_event(conn, "PaymentRefunded", f"payment:{row['id']}",
                         {"payment_id": row["id"], "order_id": row["order_id"]})
        return dict(conn.execute(f"{_PAYMENT} WHERE id = ?", (row["id"],)).fetchone())


# Events from payments_service, once it takes payments: applied to the shared table (no echo).

def apply_payment_recorded(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    p = payload["payment"]
    if conn.execute("SELECT 1 FROM payments_payment WHERE id = ?", (p["id"],)).fetchone():
        return
    conn.execute("INSERT INTO payments_payment (id, order_id, amount_cents, currency, method, status, created_at,"
                 " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (p["id"], p["order_id"], p["amount_cents"], p["currency"], p["method"], p["status"],
                  p["created_at"], p.get("idempotency_key")))


def apply_payment_refunded(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    conn.execute("UPDATE payments_payment SET status = 'refunded' WHERE id = ?", (payload["payment_id"],))
