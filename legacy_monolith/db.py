"""The one shared SQLite database every app reads and writes (the coupling the migration untangles)."""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from legacy_monolith import settings

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS django_migrations (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    applied TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (app, name)
)
"""


class Database:
    """Opens short-lived connections to one SQLite file; writers own their transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we say BEGIN ourselves, so a transaction's extent is visible in code.
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work: everything inside commits together or not at all."""
        conn = self._connect()
        try:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of
            # failing later when a read lock would have to be upgraded.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()


def next_id(conn: sqlite3.Connection, table: str) -> int:
    """The id for a row the monolith creates, inside the caller's transaction.

    Rows copied from an extracted service carry ids above settings.SERVICE_ID_BASE;
    the monolith keeps counting below it, so an id means the same row on both sides
    (SQLite's own AUTOINCREMENT would jump past the copies and collide with the
    service's next ids).
    """
    last = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table} WHERE id <= ?",
                        (settings.SERVICE_ID_BASE,)).fetchone()[0]
    if last >= settings.SERVICE_ID_BASE:
        raise RuntimeError(f"{table}: the monolith's ids are used up (at most {settings.SERVICE_ID_BASE})")
    return last + 1


def default_database() -> Database:
    return Database(settings.data_dir() / settings.DATABASE_NAME)


def _app_migrations() -> list[tuple[str, str, str]]:
    """(app label, migration name, SQL) for every installed app, in INSTALLED_APPS order."""
    found = []
    for app in settings.INSTALLED_APPS:
        try:
            models = importlib.import_module(f"{app}.models")
        except ModuleNotFoundError:
            continue
        label = app.rsplit(".", 1)[-1]
        found += [(label, name, sql) for name, sql in getattr(models, "MIGRATIONS", ())]
    return found


def migrate(database: Database) -> list[str]:
    """Apply migrations not yet applied; return their names as app.name."""
    database.path.parent.mkdir(parents=True, exist_ok=True)
    applied_now = []
    with database.transaction() as conn:
        conn.execute(MIGRATIONS_TABLE)
        done = {(r["app"], r["name"]) for r in conn.execute("SELECT app, name FROM django_migrations")}
        for label, name, sql in _app_migrations():
            if (label, name) in done:
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO django_migrations (app, name) VALUES (?, ?)", (label, name))
            applied_now.append(f"{label}.{name}")
    with database.reading() as conn:
        # WAL lets the pages keep reading while an order is being placed.
        conn.execute("PRAGMA journal_mode = WAL")
    return applied_now


def unapplied_migrations(database: Database) -> list[str]:
    """What `migrate` would still apply; empty when the schema is current."""
    with database.reading() as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'django_migrations'").fetchone():
            done = set()
        else:
            done = {(r["app"], r["name"]) for r in conn.execute("SELECT app, name FROM django_migrations")}
    return [f"{label}.{name}" for label, name, _ in _app_migrations() if (label, name) not in done]


def _statements(sql: str) -> list[str]:
    # executescript() would COMMIT our open transaction; run statement by statement instead.
    return [s.strip() for s in sql.split(";") if s.strip()]
