"""Site-wide records: uploaded files (kept on disk under the data dir, described here)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from legacy_monolith.db import Database

MIGRATIONS = [
    (
        "0001_initial",
        """
        CREATE TABLE core_upload (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            filename TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            uploaded_by INTEGER REFERENCES accounts_user (id),
            uploaded_at TEXT NOT NULL
        )
        """,
    ),
]

Upload = dict[str, Any]


def list_uploads(database: Database) -> list[Upload]:
    with database.reading() as conn:
        return [dict(row) for row in conn.execute("SELECT * FROM core_upload ORDER BY id DESC")]


def save_upload(database: Database, upload_dir: Path, *, filename: str, content_type: str, content: bytes,
                uploaded_by: int | None) -> Upload:
    """Store the bytes under their digest (a file uploaded twice is kept once), then describe them."""
    digest = hashlib.sha256(content).hexdigest()
    upload_dir.mkdir(parents=True, exist_ok=True)
    (upload_dir / digest).write_bytes(content)
    uploaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with database.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO core_upload (filename, content_type, size_bytes, sha256, uploaded_by, uploaded_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (Path(filename).name, content_type, len(content), digest, uploaded_by, uploaded_at),
        )
        return dict(conn.execute("SELECT * FROM core_upload WHERE id = ?", (cursor.lastrowid,)).fetchone())


def sales_by_product(database: Database) -> list[dict[str, Any]]:
    """The report finance asks for: units and revenue per product, best sellers first."""
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(
            "SELECT p.sku, p.name, coalesce(sum(l.quantity), 0) AS units,"
            " coalesce(sum(l.quantity * l.unit_price_cents), 0) AS revenue_cents"
            " FROM inventory_product p LEFT JOIN orders_orderline l ON l.sku = p.sku"
            " GROUP BY p.sku ORDER BY revenue_cents DESC, p.sku"
        )]
