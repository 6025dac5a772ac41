"""An extracted service is ready only once migrated, and copies from the monolith exactly once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from extracted_services.common import db
from extracted_services.common.app import build_app, database_for
from extracted_services.common.legacy import ImportRefused, import_from_legacy
from tests.contract.seeding import SERVICES


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc.test")


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_ready_only_after_migrate(name: str, tmp_path: Path) -> None:
    service = SERVICES[name]
    async with client(build_app(service, tmp_path)) as svc:
        assert (await svc.get("/health/live")).status_code == 200
        assert (await svc.get("/health/ready")).status_code == 503
        db.migrate(database_for(service, tmp_path), service.migrations)
        ready = await svc.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {"service": service.name, "status": "ok"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_import_runs_once_unless_replaced(name: str, data_dir: Path) -> None:
    service = SERVICES[name]
    database = database_for(service, data_dir)
    with pytest.raises(ImportRefused, match="already imported"):
        import_from_legacy(service, database, data_dir / "legacy.sqlite3", replace=False)
    again = import_from_legacy(service, database, data_dir / "legacy.sqlite3", replace=True)
    assert min(again.values()) > 0


def test_import_without_a_legacy_database_says_what_to_run(tmp_path: Path) -> None:
    service = SERVICES["orders"]
    database = database_for(service, tmp_path)
    db.migrate(database, service.migrations)
    with pytest.raises(ImportRefused, match="legacy_monolith migrate"):
        import_from_legacy(service, database, tmp_path / "legacy.sqlite3", replace=False)
