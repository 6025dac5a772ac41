"""GET /, its files and GET /dashboard.json, on the admin app with a loaded config and its own metrics."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import httpx

from strangler.admin import create_admin_app
from strangler.dashboard import Dashboard, DashboardSources
from strangler.dashboard.assets import TYPES
from strangler.metrics import Metrics
from strangler.reload import ConfigHolder

CONFIG = """
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9"}
  orders: {url: "http://127.0.0.1:9"}
  inventory: {url: "http://127.0.0.1:9"}
routes:
  - name: orders
    match: {path: /orders, methods: [GET]}
    split: {orders: 25, legacy: 75}
    fallback: legacy
  - name: inventory
    match: {path: /inventory}
    to: inventory
    fallback: legacy
  - name: everything-else
    match: {path: /}
    to: legacy
"""
STATIC = Path(__file__).resolve().parents[2] / "strangler" / "dashboard" / "static"


class Clock:
    now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def admin(tmp_path: Path, config: str = CONFIG, sources: DashboardSources | None = None):
    path = tmp_path / "routes.yaml"
    path.write_text(config)
    holder = ConfigHolder(str(path), Metrics())
    holder.reload()
    clock = Clock()
    dashboard = Dashboard(holder, sources, clock=clock)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(create_admin_app(holder, dashboard=dashboard)),
                               base_url="http://127.0.0.1:9000")
    return client, holder, dashboard, clock


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


async def test_the_page_and_its_files_come_from_the_package_and_nothing_from_elsewhere(tmp_path: Path) -> None:
    client, *_ = admin(tmp_path)
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    parser = Links()
    parser.feed(page.text)
    assert sorted(parser.links) == ["dashboard/dashboard.css", "dashboard/dashboard.js", "dashboard/favicon.svg"]
    for link in parser.links:
        found = await client.get("/" + link)
        assert found.status_code == 200 and found.headers["content-type"] == TYPES[link.split("/")[-1]]
    assert (await client.get("/dashboard/../admin.py")).status_code == 404
    assert (await client.get("/dashboard/routes.yaml")).status_code == 404


def test_the_page_names_no_address_outside_its_own_listener() -> None:
    """Offline: no CDN, no font, no script from elsewhere; relative URLs only (the SVG namespace is a name)."""
    for path in STATIC.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"""(?:https?:)?//[\w.-]+[^\s"'`)]*""", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{path.name} names {urls}"
        assert "@import" not in text and "url(" not in text
    assert {path.name for path in STATIC.iterdir()} == set(TYPES)


async def test_dashboard_json_shows_the_routes_splits_and_breakers_of_get_routes(tmp_path: Path) -> None:
    client, holder, dashboard, _ = admin(tmp_path)
    routes = (await client.get("/routes")).json()
    document = (await client.get("/dashboard.json")).json()
    assert [(r["name"], r["split"], r["fallback"], {u: b["state"] for u, b in r["breakers"].items()})
            for r in routes["routes"]] == [(r["name"], r["split"], r["fallback"], r["breakers"])
                                          for r in document["routes"]]
    assert document["version"] == routes["version"]
    assert [(r["legacy"], r["new_percent"]) for r in document["routes"]] == [
        ("legacy", 25.0), ("legacy", 100.0), ("legacy", 0.0)]
    assert document["progress"] == {"window_s": 0, "requests": 0, "new_share": None, "routes": 3, "routes_moved": 1}
    assert document["features"] == {"ramps": False, "ramps_available": False, "shadow": False,
                                     "shadow_available": False, "token_required": False}
    assert document["rollback_all"] is None
    assert all(route["ramp"] is None and route["shadow"] is None for route in document["routes"])


async def test_dashboard_json_carries_the_figures_and_only_the_frames_a_page_lacks(tmp_path: Path) -> None:
    client, holder, dashboard, clock = admin(tmp_path)
    metrics = holder.metrics
    dashboard.history.tick()
    for seq in range(1, 4):
        for _ in range(30):
            metrics.count_request("orders", "orders", "GET", 200)
            metrics.pair("orders", "orders").duration.observe(0.003)
        for _ in range(20):
            metrics.count_request("orders", "legacy", "GET", 502)
        clock.now += 5
        dashboard.history.tick()
    document = (await client.get("/dashboard.json")).json()
    orders = document["routes"][0]["figures"]
    assert orders["requests_per_s"] == 10.0 and orders["window_s"] == 15.0
    assert orders["new"] == {"requests_per_s": 6.0, "error_rate": 0.0, "p95_ms": 4.875}
    assert orders["legacy"] == {"requests_per_s": 4.0, "error_rate": 1.0, "p95_ms": None}
    assert document["progress"]["new_share"] == 0.6 and document["progress"]["requests"] == 150
    history = document["history"]
    assert (history["seq"], history["from_seq"], history["interval_s"], history["capacity"]) == (3, 1, 5.0, 180)
    assert history["routes"]["orders"]["new_rps"] == [6.0, 6.0, 6.0]
    assert history["routes"]["everything-else"]["legacy_rps"] == [0.0, 0.0, 0.0]
    later = (await client.get("/dashboard.json?since=2")).json()["history"]
    assert (later["from_seq"], later["at"], later["routes"]["orders"]["legacy_error_rate"]) == (3, [clock.now], [1.0])
    assert (await client.get("/dashboard.json?since=3")).json()["history"]["at"] == []
    assert (await client.get("/dashboard.json?since=nonsense")).json()["history"]["from_seq"] == 1


RAMPS = {
    "rollback_all": {"active": True, "reason": "orders p95 doubled", "since": "2026-12-07T10:00:00+00:00",
                     "by": "127.0.0.1", "legacy": "legacy", "routes": ["orders", "everything-else"],
                     "left": {"inventory": "its split does not name legacy"}, "ignored": 1},
    "ramps": [{"route": "orders", "to": "orders", "legacy": "legacy", "state": "paused", "percent": 25.0,
               "steps": [5, 25, 50, 100], "step": 1, "next_step": 50, "every_s": 600.0, "on_breach": "rollback",
               "next_evaluation_at": None, "frozen_by_rollback_all": True,
               "last_decisions": [{"at": "2026-12-07T09:59:00+00:00", "decision": "advance", "gate": "none",
                                   "reason": "every gate held", "figures": {}}]}],
}
SHADOW = {"routes": [{"route": "orders", "shadow": "orders", "match_rate": 0.97,
                      "top_fields": [{"field": f"$.f{i}", "count": i} for i in range(8)]}]}


async def test_ramps_roll_back_all_and_shadow_come_from_their_sources(tmp_path: Path) -> None:
    sources = DashboardSources(ramps=lambda: RAMPS, shadow=lambda: SHADOW, token_required=lambda: True)
    client, *_ = admin(tmp_path, sources=sources)
    document = (await client.get("/dashboard.json")).json()
    assert document["features"] == {"ramps": True, "ramps_available": True, "shadow": True,
                                     "shadow_available": True, "token_required": True}
    assert document["rollback_all"] == {key: value for key, value in RAMPS["rollback_all"].items() if key != "ignored"}
    orders = document["routes"][0]
    assert orders["ramp"]["state"] == "paused" and orders["ramp"]["steps"] == [5, 25, 50, 100]
    assert orders["ramp"]["last_decision"] == {"at": "2026-12-07T09:59:00+00:00", "decision": "advance",
                                               "event": None, "gate": "none", "reason": "every gate held"}
    assert orders["shadow"]["match_rate"] == 0.97 and orders["shadow"]["samples"] == "shadow/orders/samples"
    assert [field["field"] for field in orders["shadow"]["top_fields"]] == ["$.f7", "$.f6", "$.f5", "$.f4", "$.f3"]
    assert document["routes"][1]["ramp"] is None and document["routes"][1]["shadow"] is None


async def test_a_failing_source_leaves_its_section_unavailable_and_the_rest_of_the_page(tmp_path: Path,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict:
        raise RuntimeError("controller away")

    client, *_ = admin(tmp_path, sources=DashboardSources(ramps=broken, shadow=lambda: {"routes": {"orders": {
        "upstream": "orders", "fields": {"$.total": 3, "$.id": 9}}}}))
    response = await client.get("/dashboard.json")
    assert response.status_code == 200
    document = response.json()
    assert document["features"]["ramps"] and not document["features"]["ramps_available"]
    assert document["rollback_all"] is None and len(document["routes"]) == 3
    assert document["routes"][0]["shadow"]["top_fields"] == [{"field": "$.id", "count": 9},
                                                              {"field": "$.total", "count": 3}]
    assert "dashboard.source_error source=ramps" in caplog.text


async def test_the_legacy_side_is_the_upstream_named_legacy_else_the_fallback(tmp_path: Path) -> None:
    config = """
version: 1
upstreams:
  monolith: {url: "http://127.0.0.1:9"}
  orders: {url: "http://127.0.0.1:9"}
routes:
  - name: orders
    match: {path: /orders}
    split: {orders: 40, monolith: 60}
    fallback: monolith
  - name: rest
    match: {path: /}
    to: monolith
"""
    client, holder, *_ = admin(tmp_path, config)
    document = (await client.get("/dashboard.json")).json()
    assert [(r["legacy"], r["new_percent"]) for r in document["routes"]] == [("monolith", 40.0), (None, 100.0)]
    metrics = (await client.get("/metrics")).text
    assert 'strangler_route_legacy_info{route="orders",upstream="monolith"} 1.0' in metrics
    assert 'strangler_route_legacy_info{route="rest"' not in metrics


async def test_a_composite_route_has_moved_as_far_as_its_parts_and_its_answers_are_no_sides(tmp_path: Path) -> None:
    config = """
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9", role: legacy}
  orders: {url: "http://127.0.0.1:9"}
routes:
  - name: order-summary
    match: {path: "/api/order-summary/{id}", methods: [GET]}
    compose:
      order: {upstream: orders, path: "/api/orders/{id}/", required: true}
      shipping: {upstream: legacy, path: "/api/shipping/?order_id={id}"}
  - name: rest
    match: {path: /}
    to: legacy
"""
    client, holder, dashboard, clock = admin(tmp_path, config)
    dashboard.history.tick()
    for _ in range(10):
        holder.metrics.count_request("order-summary", "", "GET", 200)     # a composite's answer: no one upstream
    clock.now += 5
    dashboard.history.tick()
    document = (await client.get("/dashboard.json")).json()
    summary = document["routes"][0]
    assert (summary["compose"], summary["split"], summary["new_percent"]) == (
        {"order": "orders", "shipping": "legacy"}, {}, 50.0)
    assert document["progress"]["routes_moved"] == 0 and document["progress"]["requests"] == 0
    assert summary["figures"]["requests_per_s"] == 0.0
