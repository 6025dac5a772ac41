"""Shop customers and staff, with Django-format salted PBKDF2 password hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone
from typing import Any

from legacy_monolith import settings
from legacy_monolith.db import Database

MIGRATIONS = [
    (
        "0001_initial",
        """
        CREATE TABLE accounts_user (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            full_name TEXT NOT NULL,
            password TEXT NOT NULL,
            is_staff INTEGER NOT NULL DEFAULT 0,
            date_joined TEXT NOT NULL,
            last_login TEXT
        )
        """,
    ),
]

User = dict[str, Any]
PUBLIC_FIELDS = "id, email, full_name, is_staff, date_joined, last_login"


def make_password(raw: str, *, salt: str | None = None, iterations: int | None = None) -> str:
    salt = salt or secrets.token_hex(8)
    iterations = iterations or settings.PASSWORD_HASH_ITERATIONS
    digest = hashlib.pbkdf2_hmac("sha256", raw.encode(), salt.encode(), iterations).hex()
    return f"pbkdf2_sha256${iterations}${salt}${digest}"


def check_password(raw: str, encoded: str) -> bool:
    try:
        _algorithm, iterations, salt, _digest = encoded.split("$")
        expected = make_password(raw, salt=salt, iterations=int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, encoded)


def create_user(database: Database, *, email: str, password: str, full_name: str, is_staff: bool = False,
                date_joined: str | None = None) -> int:
    joined = date_joined or datetime.now(timezone.utc).isoformat(timespec="seconds")
    with database.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO accounts_user (email, full_name, password, is_staff, date_joined) VALUES (?, ?, ?, ?, ?)",
            (email.lower(), full_name, make_password(password), int(is_staff), joined),
        )
        return cursor.lastrowid


def get_user(database: Database, user_id: int) -> User | None:
    with database.reading() as conn:
        row = conn.execute(f"SELECT {PUBLIC_FIELDS} FROM accounts_user WHERE id = ?", (user_id,)).fetchone()
    return dict(row) if row else None


def authenticate(database: Database, *, email: str, password: str) -> User | None:
    with database.reading() as conn:
        row = conn.execute("SELECT id, password FROM accounts_user WHERE email = ?", (email.strip().lower(),)).fetchone()
    if row is None or not check_password(password, row["password"]):
        return None
    return get_user(database, row["id"])


def record_login(database: Database, user_id: int) -> None:
    with database.transaction() as conn:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        conn.execute("UPDATE accounts_user SET last_login = ? WHERE id = ?", (now, user_id))
