"""Reading the monolith's database once, to seed a service with the rows it now owns."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from extracted_services.common.db import Database
from extracted_services.common.service import Service

LEGACY_DATABASE_NAME = "legacy.sqlite3"
_IMPORTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS legacy_import (id INTEGER PRIMARY KEY, imported_at TEXT NOT NULL, rows TEXT NOT NULL)"
)


class ImportRefused(Exception):
    """The copy would be wrong or repeated; the message says why and what to do."""


def copy_sequence(conn: sqlite3.Connection, *, legacy_table: str, table: str) -> None:
    """Continue ids where the monolith left off, so an id means the same thing on both sides."""
    conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT ?, seq FROM legacy.sqlite_sequence WHERE name = ?",
        (table, legacy_table),
    )


def import_from_legacy(service: Service, database: Database, legacy_path: Path, *, replace: bool) -> dict[str, int]:
    """Copy the service's data out of the monolith's database, once (again only with replace)."""
    if not legacy_path.exists():
        raise ImportRefused(f"{legacy_path}: no legacy database; run `python -m legacy_monolith migrate` and `seed`")
    conn = database.connect()
    try:
        # ATTACH cannot run inside a transaction, so it comes first; read-only, the monolith stays untouched.
        conn.execute("ATTACH DATABASE ? AS legacy", (f"{legacy_path.resolve().as_uri()}?mode=ro",))
        with database.transaction(conn):
            conn.execute(_IMPORTS_TABLE)
            earlier = conn.execute("SELECT imported_at FROM legacy_import ORDER BY id DESC").fetchone()
            if earlier and not replace:
                raise ImportRefused(f"{service.name}: already imported at {earlier[0]}; pass --replace to copy again")
            for table in service.tables:
                conn.execute(f"DELETE FROM {table}")
            rows = service.copy_from_legacy(conn)
            conn.execute("INSERT INTO legacy_import (imported_at, rows) VALUES (?, ?)",
                         (datetime.now(timezone.utc).isoformat(timespec="seconds"), json.dumps(rows)))
        return rows
    except sqlite3.Error as exc:
        raise ImportRefused(f"{legacy_path}: cannot copy from the legacy database: {exc}") from exc
    finally:
        conn.close()
