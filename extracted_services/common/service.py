"""What makes one extracted service: its name, schema, routes and how it copies legacy data."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.routing import BaseRoute

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
