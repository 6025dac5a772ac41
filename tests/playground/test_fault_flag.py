"""orders_service's planted fault: a share of its API answered 500, switched at runtime, never through the proxy."""

from __future__ import annotations

from pathlib import Path

import httpx

from extracted_services.common.app import build_app
from tests.contract.seeding import SERVICES


async def test_the_fault_flag_fails_a_share_of_api_requests_and_nothing_else(data_dir: Path) -> None:
    app = build_app(SERVICES["orders"], data_dir)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc.test") as svc:
        assert (await svc.get("/faults/")).json() == {"error_percent": 0.0}
        assert (await svc.get("/api/orders/1/")).status_code == 200
        assert (await svc.post("/faults/", json={"error_percent": 100})).json() == {"error_percent": 100.0}
        failed = await svc.get("/api/orders/1/")
        assert failed.status_code == 500 and failed.json()["error"] == "planted_fault"
        assert (await svc.get("/health/ready")).status_code == 200          # up, and failing its work
        assert (await svc.post("/faults/", json={"error_percent": 101})).status_code == 400
        assert (await svc.post("/faults/", content=b"{")).status_code == 400
        proxied = await svc.post("/faults/", json={"error_percent": 0}, headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 404                                  # not through the proxy
        assert (await svc.post("/faults/", json={"error_percent": 0})).json() == {"error_percent": 0.0}
        assert (await svc.get("/api/orders/1/")).status_code == 200
