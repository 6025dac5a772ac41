"""A service's own SQLite database: short connections, explicit transactions, numbered migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

Migration = tuple[str, str]  # (name, SQL statements separated by ';')

# While a context is split, the monolith and its service both create rows (orders,
# reservations, payments) and copy each other's. The monolith keeps ids up to this
# number, a service makes ids above it, so an id means the same row on both sides.
SERVICE_ID_BASE = 1_000_000_000

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


class Database:
    """One SQLite file. Each write function owns one `transaction()`: the unit an outbox row will join."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def connect(self) -> sqlite3.Connection:
        # isolation_level=None: we say BEGIN ourselves, so a transaction's extent is visible in code.
        # uri=True lets ATTACH open the legacy database read-only (`?mode=ro`).
        conn = sqlite3.connect(self.path.resolve().as_uri(), uri=True, timeout=5.0, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """Everything inside commits together or not at all."""
        owned = conn is None
        conn = conn or self.connect()
        try:
            # IMMEDIATE takes the write lock up front: two writers queue instead of one failing late.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if owned:
                conn.close()


def next_service_id(conn: sqlite3.Connection, table: str) -> int:
    """The id for a row this service creates: above SERVICE_ID_BASE, past every one made before (caller's transaction)."""
    last = conn.execute(f"SELECT max(id) FROM {table} WHERE id > ?", (SERVICE_ID_BASE,)).fetchone()[0]
    return (last or SERVICE_ID_BASE) + 1


def _statements(sql: str) -> list[str]:
    # executescript() would commit our open transaction; run statement by statement instead.
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


def migrate(database: Database, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction; return their names."""
    database.path.parent.mkdir(parents=True, exist_ok=True)
    applied = []
    for name in unapplied_migrations(database, migrations):
        sql = dict(migrations)[name]
        with database.transaction() as conn:
            conn.execute(_MIGRATIONS_TABLE)
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (?)", (name,))
        applied.append(name)
    with database.reading() as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
    return applied


def unapplied_migrations(database: Database, migrations: Sequence[Migration]) -> list[str]:
    with database.reading() as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone() is None:
            return [name for name, _ in migrations]
        done = {row["name"] for row in conn.execute("SELECT name FROM schema_migrations")}
    return [name for name, _ in migrations if name not in done]
