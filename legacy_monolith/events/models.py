"""The outbox, delivery records, dead letters and processed events: the same tables as every service's.

The shop's own write functions record their events here inside their own
transactions (orders, inventory, payments, shipping models call record_event).
"""

from __future__ import annotations

from domain_events.outbox import EVENT_TABLES, SCHEMA

MIGRATIONS = [("0001_outbox", SCHEMA)]
TABLES = EVENT_TABLES
