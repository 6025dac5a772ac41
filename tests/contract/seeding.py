"""The demo's data set, built in-process for tests: the monolith seeded, each service imported from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from extracted_services.common import db as service_db
from extracted_services.common.app import database_for
from extracted_services.common.legacy import import_from_legacy
from extracted_services.inventory_service.service import SERVICE as INVENTORY
from extracted_services.orders_service.service import SERVICE as ORDERS
from extracted_services.payments_service.service import SERVICE as PAYMENTS
from legacy_monolith import db as legacy_db
from legacy_monolith import settings
from legacy_monolith.seed import seed

SERVICES = {"inventory": INVENTORY, "orders": ORDERS, "payments": PAYMENTS}


def seed_everything(directory: Path) -> None:
    """What `strangler demo` does: migrate and seed the monolith, then each service imports from it."""
    database = legacy_db.Database(directory / settings.DATABASE_NAME)
    legacy_db.migrate(database)
    seed(database)
    for service in SERVICES.values():
        service_database = database_for(service, directory)
        service_db.migrate(service_database, service.migrations)
        import_from_legacy(service, service_database, database.path, replace=False)


def copy_databases(source_dir: Path, target_dir: Path) -> Path:
    """A private copy of every database, consistent even with WAL files beside the source."""
    for source in source_dir.glob("*.sqlite3"):
        src, dst = sqlite3.connect(source), sqlite3.connect(target_dir / source.name)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
    return target_dir
