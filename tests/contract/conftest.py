"""Seeded data for both sides of the contract: the monolith's database and each service's copy of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from extracted_services.common.app import build_app as build_service_app
from legacy_monolith.asgi import build_app as build_monolith_app
from tests.contract.seeding import SERVICES
from tests.support.seeded import data_dir, seeded_template  # noqa: F401  (fixtures)


@pytest.fixture
def client_for(data_dir: Path) -> Callable[[str], httpx.AsyncClient]:
    """An in-process client for 'legacy' or a service name, over the same seeded data."""

    def client(side: str) -> httpx.AsyncClient:
        app = build_monolith_app(data_dir) if side == "legacy" else build_service_app(SERVICES[side], data_dir)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")

    return client
