"""The README's shadow walk-through: the shipped config shadows order reads to orders_service, and with
its planted difference switched on, GET /shadow names the field that differs."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import httpx

import strangler.app  # noqa: F401 - the proxy these tests run in a subprocess: a broken import fails here
from extracted_services.common.app import build_app as build_service_app
from extracted_services.orders_service.views import ROUND_LINE_TOTALS_ENV
from legacy_monolith.asgi import build_app as build_monolith_app
from tests.contract.seeding import SERVICES, seed_everything
from tests.support.servers import REPO, ProxyProcess, ThreadedServer, wait_until

REQUESTS = 200
ORDER_IDS = 24          # the seed's orders


def test_the_shadow_report_finds_the_planted_difference_by_field_path(tmp_path: Path) -> None:
    seed_everything(tmp_path)
    servers = {"legacy": ThreadedServer(build_monolith_app(tmp_path)).start()}
    with mock.patch.dict(os.environ, {ROUND_LINE_TOTALS_ENV: "1"}):
        servers["orders"] = ThreadedServer(build_service_app(SERVICES["orders"], tmp_path)).start()
    config = (REPO / "config" / "routes.yaml").read_text()
    for name, port in (("legacy", 8001), ("orders", 8101)):
        config = config.replace(f"http://127.0.0.1:{port}\n", servers[name].url + "\n")
    (tmp_path / "routes.yaml").write_text(config)
    proxy = ProxyProcess(tmp_path / "routes.yaml").start()
    try:
        answered_by_legacy = 0
        with httpx.Client(base_url=proxy.url, timeout=10) as client:
            for number in range(REQUESTS):
                # No cohort cookie: each request is placed at random, a quarter of them on orders_service.
                response = client.get(f"/api/orders/{number % ORDER_IDS + 1}/")
                assert response.status_code == 200
                answered_by_legacy += response.headers["x-strangler-upstream"] == "legacy"

        def report() -> dict:
            return httpx.get(proxy.admin_url + "/shadow", timeout=5).json()["routes"]["orders-read"]

        wait_until(lambda: sum(report()["counts"].values()) == answered_by_legacy, timeout_s=20,
                   what=f"{answered_by_legacy} copies compared")
        found = report()
        assert found["shadow"] == "orders" and found["counts"]["mismatch"] > 0
        top = found["fields"][0]
        assert top["field"] == "$.lines[*].line_total_cents" and top["count"] == found["counts"]["mismatch"]
        assert int(top["example"]["shadow"]) % 100 == 0 and top["example"]["primary"] != top["example"]["shadow"]
        assert [field["field"] for field in found["fields"]] == ["$.lines[*].line_total_cents"]
    finally:
        proxy.terminate()
        for server in servers.values():
            server.stop()
