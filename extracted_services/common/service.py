"""What makes one extracted service: its name, schema, routes and how it copies legacy data."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute

from domain_events.inbox import Handler
from extracted_services.common.db import Migration


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    name: str                               # e.g. "orders_service"
    database_name: str                      # file in the data dir, e.g. "orders.sqlite3"
    default_port: int
    migrations: Sequence[Migration]
    routes: Sequence[BaseRoute]             # the API it took over; health routes are added for it
    tables: Sequence[str]                   # its own tables, children first (emptied by --replace)
    # Copies rows from the attached `legacy` schema inside one transaction; returns rows per table.
    copy_from_legacy: Callable[[sqlite3.Connection], dict[str, int]]
    # Events from the other side this service applies to its copy, by type; others are acknowledged and ignored.
    event_handlers: Mapping[str, Handler] = field(default_factory=dict)
    # Called once the app exists (state the routes need); then, while it serves, its lifecycle runs.
    configure: Callable[[Any], None] | None = None
    lifecycle: Callable[[Any], AbstractAsyncContextManager[None]] | None = None
