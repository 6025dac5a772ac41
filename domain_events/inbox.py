"""The consumer's half: apply each event once, deduplicated by its id, in one transaction with its effect."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from domain_events.outbox import now_iso

Handler = Callable[[sqlite3.Connection, dict[str, Any]], None]   # applies one event's payload


class EventRejected(Exception):
    """The event cannot be applied here, now or later (the relay dead-letters it): the message says why."""


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    aggregate: str
    source: str
    occurred_at: str
    payload: dict[str, Any]

    @classmethod
    def from_message(cls, data: Any) -> "Event":
        if not isinstance(data, dict):
            raise ValueError("an event is a JSON object")
        fields = {}
        for name in ("event_id", "type", "aggregate", "source", "occurred_at"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
            fields[name] = value
        if not isinstance(data.get("payload"), dict):
            raise ValueError("payload must be an object")
        return cls(payload=data["payload"], **fields)


def apply_event(database: Any, event: Event, handlers: Mapping[str, Handler]) -> str:
    """Apply the event unless it was seen before: 'applied', 'duplicate' or 'ignored' (no handler here).

    The processed_events row commits with the event's effect, so a crash can never
    leave one without the other: a redelivered event is recognised, never applied twice.
    """
    with database.transaction() as conn:
        if conn.execute("SELECT 1 FROM processed_events WHERE event_id = ?", (event.event_id,)).fetchone():
            return "duplicate"
        handler = handlers.get(event.type)
        outcome = "ignored" if handler is None else "applied"
        if handler is not None:
            try:
                handler(conn, event.payload)
            except (KeyError, TypeError, ValueError) as exc:
                raise EventRejected(f"malformed {event.type} payload: {type(exc).__name__}: {exc}") from exc
            except sqlite3.IntegrityError as exc:
                raise EventRejected(f"{event.type} conflicts with the data here: {exc}") from exc
        conn.execute("INSERT INTO processed_events (event_id, type, source, outcome, processed_at)"
                     " VALUES (?, ?, ?, ?, ?)", (event.event_id, event.type, event.source, outcome, now_iso()))
    return outcome
