"""Seeded data for both sides of the contract: the monolith's database and each service's copy of it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from extracted_services.common import db as service_db
from extracted_services.common.app import build_app as build_service_app
from extracted_services.common.app import database_for
from extracted_services.common.legacy import import_from_legacy
from extracted_services.common.service import Service
from extracted_services.inventory_service.service import SERVICE as INVENTORY
from extracted_services.orders_service.service import SERVICE as ORDERS
from extracted_services.payments_service.service import SERVICE as PAYMENTS
from legacy_monolith import db as legacy_db
from legacy_monolith import settings
from legacy_monolith.asgi import build_app as build_monolith_app
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


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("seeded")
    seed_everything(directory)
    return directory


@pytest.fixture
def data_dir(seeded_template: Path, tmp_path: Path) -> Path:
    """A private copy of the seeded databases: a test may write without disturbing the next."""
    for source in seeded_template.glob("*.sqlite3"):
        with sqlite3.connect(source) as src, sqlite3.connect(tmp_path / source.name) as dst:
            src.backup(dst)  # consistent even with WAL files beside the source
        src.close()
        dst.close()
    return tmp_path


@pytest.fixture
def client_for(data_dir: Path) -> Callable[[str], httpx.AsyncClient]:
    """An in-process client for 'legacy' or a service name, over the same seeded data."""

    def client(side: str) -> httpx.AsyncClient:
        if side == "legacy":
            app = build_monolith_app(data_dir)
        else:
            service: Service = SERVICES[side]
            app = build_service_app(service, data_dir)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")

    return client
