"""The transactional outbox: events written with the change they describe, and their delivery records.

A write function calls `record_event(conn, ...)` inside its own transaction, so the
event exists exactly when the change does. The relay (relay.py) reads them back in
order, and keeps per subscriber what was delivered, what waits for a retry and
what was given up on (a dead letter). The same tables serve the monolith and every
service; `processed_events` is the consumer's half (inbox.py).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

SCHEMA = """
CREATE TABLE outbox_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- the order events were written in
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    aggregate TEXT NOT NULL,                -- e.g. order:25, delivered in order per aggregate
    payload TEXT NOT NULL,
    occurred_at TEXT NOT NULL
);
CREATE INDEX outbox_events_aggregate ON outbox_events (aggregate, id);
CREATE TABLE outbox_deliveries (
    event_seq INTEGER NOT NULL REFERENCES outbox_events (id),
    subscriber TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (event_seq, subscriber)
);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('event', 'saga')),
    ref TEXT NOT NULL,                      -- the event id, or the saga's order id
    subscriber TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,                   -- the event or the saga, as JSON
    created_at TEXT NOT NULL,
    replayed_at TEXT
);
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    processed_at TEXT NOT NULL
)
"""
EVENT_TABLES = ("dead_letters", "outbox_deliveries", "outbox_events", "processed_events")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def record_event(conn: sqlite3.Connection, type: str, aggregate: str, payload: dict[str, Any]) -> str:
    """Add an event to the outbox inside the caller's transaction; return its id."""
    event_id = uuid.uuid4().hex
    conn.execute("INSERT INTO outbox_events (event_id, type, aggregate, payload, occurred_at) VALUES (?, ?, ?, ?, ?)",
                 (event_id, type, aggregate, json.dumps(payload, separators=(",", ":"), sort_keys=True), now_iso()))
    return event_id


@dataclass(frozen=True, slots=True)
class PendingEvent:
    seq: int
    event_id: str
    type: str
    aggregate: str
    payload: dict[str, Any]
    occurred_at: str
    attempts: int
    next_attempt_at: float

    def message(self, source: str) -> dict[str, Any]:
        """The event as it travels to a subscriber's POST /events/."""
        return {"event_id": self.event_id, "type": self.type, "aggregate": self.aggregate, "source": source,
                "occurred_at": self.occurred_at, "payload": self.payload}


# The first unfinished event of each aggregate: only it may go out, so an aggregate's
# events arrive in the order they were written, while other aggregates carry on.
_HEADS = """
SELECT e.id, e.event_id, e.type, e.aggregate, e.payload, e.occurred_at,
       coalesce(d.attempts, 0) AS attempts, coalesce(d.next_attempt_at, 0) AS next_attempt_at
FROM outbox_events e LEFT JOIN outbox_deliveries d ON d.event_seq = e.id AND d.subscriber = :subscriber
WHERE e.id IN (
    SELECT min(x.id) FROM outbox_events x
    LEFT JOIN outbox_deliveries y ON y.event_seq = x.id AND y.subscriber = :subscriber
    WHERE x.id > :floor AND x.id <= :ceiling AND (y.status IS NULL OR y.status = 'pending')
    GROUP BY x.aggregate)
ORDER BY e.id LIMIT :limit
"""
_UNFINISHED = """
SELECT count(*) FROM outbox_events x
LEFT JOIN outbox_deliveries y ON y.event_seq = x.id AND y.subscriber = :subscriber
WHERE x.id > :floor AND x.id <= :ceiling AND (y.status IS NULL OR y.status = 'pending')
"""


def pending_heads(conn: sqlite3.Connection, subscriber: str, *, floor: int,
                  limit: int) -> tuple[list[PendingEvent], int, int]:
    """(heads of unfinished aggregates, how many events are unfinished, the newest event's seq), one snapshot."""
    conn.execute("BEGIN")   # one read snapshot: events committed meanwhile are all above `ceiling`
    try:
        ceiling = conn.execute("SELECT coalesce(max(id), 0) FROM outbox_events").fetchone()[0]
        params = {"subscriber": subscriber, "floor": floor, "ceiling": ceiling, "limit": limit}
        rows = conn.execute(_HEADS, params).fetchall()
        unfinished = conn.execute(_UNFINISHED, params).fetchone()[0]
    finally:
        conn.execute("COMMIT")
    heads = [PendingEvent(row["id"], row["event_id"], row["type"], row["aggregate"], json.loads(row["payload"]),
                          row["occurred_at"], row["attempts"], row["next_attempt_at"]) for row in rows]
    return heads, unfinished, ceiling


def _set_delivery(conn: sqlite3.Connection, seq: int, subscriber: str, status: str, attempts: int,
                  next_attempt_at: float, error: str | None) -> None:
    conn.execute(
        "INSERT INTO outbox_deliveries (event_seq, subscriber, status, attempts, next_attempt_at, last_error, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_seq, subscriber) DO UPDATE SET status = excluded.status,"
        " attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,"
        " updated_at = excluded.updated_at",
        (seq, subscriber, status, attempts, next_attempt_at, error, now_iso()),
    )


def mark_delivered(conn: sqlite3.Connection, event: PendingEvent, subscriber: str) -> None:
    _set_delivery(conn, event.seq, subscriber, "delivered", event.attempts + 1, 0, None)


def mark_failed(conn: sqlite3.Connection, event: PendingEvent, subscriber: str, *, next_attempt_at: float,
                error: str) -> None:
    _set_delivery(conn, event.seq, subscriber, "pending", event.attempts + 1, next_attempt_at, error)


def mark_dead(conn: sqlite3.Connection, event: PendingEvent, subscriber: str, *, source: str, reason: str) -> None:
    """Give up on the event for this subscriber, and keep it where people look: dead_letters."""
    _set_delivery(conn, event.seq, subscriber, "dead", event.attempts + 1, 0, reason)
    add_dead_letter(conn, kind="event", ref=event.event_id, subscriber=subscriber, reason=reason,
                    detail=event.message(source))


def add_dead_letter(conn: sqlite3.Connection, *, kind: str, ref: str, reason: str, detail: dict[str, Any],
                    subscriber: str | None = None) -> int:
    cursor = conn.execute(
        "INSERT INTO dead_letters (kind, ref, subscriber, reason, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, ref, subscriber, reason, json.dumps(detail, sort_keys=True), now_iso()),
    )
    return cursor.lastrowid


def list_dead_letters(conn: sqlite3.Connection, *, include_replayed: bool = False) -> list[dict[str, Any]]:
    where = "" if include_replayed else "WHERE replayed_at IS NULL"
    rows = conn.execute(f"SELECT id, kind, ref, subscriber, reason, detail, created_at, replayed_at"
                        f" FROM dead_letters {where} ORDER BY id").fetchall()
    return [{**dict(row), "detail": json.loads(row["detail"])} for row in rows]


def replay_dead_letter(conn: sqlite3.Connection, letter_id: int) -> dict[str, Any] | None:
    """Put a dead event back in the queue (attempts from zero); None if there is no such event letter."""
    row = conn.execute("SELECT id, kind, ref, subscriber FROM dead_letters WHERE id = ? AND kind = 'event'"
                       " AND replayed_at IS NULL", (letter_id,)).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM outbox_deliveries WHERE subscriber = ? AND event_seq ="
                 " (SELECT id FROM outbox_events WHERE event_id = ?)", (row["subscriber"], row["ref"]))
    conn.execute("UPDATE dead_letters SET replayed_at = ? WHERE id = ?", (now_iso(), letter_id))
    return dict(row)


def delivery_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per subscriber, events by delivery status (events never tried are not counted here)."""
    counts: dict[str, dict[str, int]] = {}
    for row in conn.execute("SELECT subscriber, status, count(*) AS n FROM outbox_deliveries"
                            " GROUP BY subscriber, status"):
        counts.setdefault(row["subscriber"], {})[row["status"]] = row["n"]
    return counts


def total_events(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM outbox_events").fetchone()[0]


def prune(conn: sqlite3.Connection, subscribers: Iterable[str], *, before: str) -> tuple[int, int]:
    """Forget what no one needs any more: (outbox events removed, processed event ids removed).

    An event goes once every current subscriber acknowledged it and it is older than `before`
    (an ISO timestamp); a dead or pending one stays for its retry or its replay. A processed
    id goes once older than `before`: senders stop resending within minutes, so an id that
    old can no longer arrive again. Run inside the caller's transaction.
    """
    names = sorted(set(subscribers))
    named = ", ".join("?" * len(names)) or "NULL"
    acknowledged = (f"(SELECT count(*) FROM outbox_deliveries d WHERE d.event_seq = e.id AND d.status = 'delivered'"
                    f" AND d.subscriber IN ({named})) = ?")
    done = [row[0] for row in conn.execute(
        f"SELECT e.id FROM outbox_events e WHERE e.occurred_at < ? AND {acknowledged}", (before, *names, len(names)))]
    for start in range(0, len(done), 500):      # SQLite bounds the number of parameters
        batch = done[start:start + 500]
        marks = ", ".join("?" * len(batch))
        conn.execute(f"DELETE FROM outbox_deliveries WHERE event_seq IN ({marks})", batch)
        conn.execute(f"DELETE FROM outbox_events WHERE id IN ({marks})", batch)
    events = len(done)
    processed = conn.execute("DELETE FROM processed_events WHERE processed_at < ?", (before,)).rowcount
    return events, processed
