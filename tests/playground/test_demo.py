"""`strangler demo` from nothing: fresh data, everything ready in 15 s, routed as configured, no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

import playground.demo  # noqa: F401 - what `strangler demo` runs in a subprocess: a broken import fails here
import strangler.app  # noqa: F401 - likewise the proxy it starts
from tests.playground.conftest import CSRF_FIELD
from tests.support.servers import REPO, free_port, wait_until

READY_WITHIN_S = 15.0
SHIPPED_PORTS = {"listen": 8000, "admin": 9000, "legacy": 8001, "orders": 8101, "inventory": 8102, "payments": 8103}


def shipped_config_on_free_ports(path: Path) -> dict[str, int]:
    text = (REPO / "config" / "routes.yaml").read_text()
    ports = {name: free_port() for name in SHIPPED_PORTS}
    for name, shipped in SHIPPED_PORTS.items():
        assert f"port: {shipped}}}" in text or f"127.0.0.1:{shipped}\n" in text, f"{name} is not on {shipped}"
        text = text.replace(f"port: {shipped}}}", f"port: {ports[name]}}}")
        text = text.replace(f"127.0.0.1:{shipped}\n", f"127.0.0.1:{ports[name]}\n")
    path.write_text(text)
    return ports


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"PPid:\t{pid}\n" in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_demo_starts_fresh_routes_as_configured_and_leaves_nothing_behind(tmp_path: Path) -> None:
    ports = shipped_config_on_free_ports(tmp_path / "routes.yaml")
    data_dir = tmp_path / "data"  # does not exist yet: as on a fresh checkout
    log = open(tmp_path / "demo.log", "wb")
    started = time.monotonic()
    demo = subprocess.Popen([sys.executable, "-m", "strangler", "demo", "--config", str(tmp_path / "routes.yaml")],
                            cwd=REPO, env={**os.environ, "STRANGLER_DATA_DIR": str(data_dir)},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        readiness = [f"http://127.0.0.1:{ports['admin']}/health/ready"] + [
            f"http://127.0.0.1:{ports[name]}/health/ready" for name in ("legacy", "orders", "inventory", "payments")]
        wait_until(lambda: demo.poll() is None and all(ready(url) for url in readiness), timeout_s=READY_WITHIN_S,
                   interval_s=0.1, what=f"the demo to be ready (log: {tmp_path / 'demo.log'})")
        assert time.monotonic() - started < READY_WITHIN_S
        wait_until(lambda: b"strangler demo is up" in (tmp_path / "demo.log").read_bytes(), timeout_s=5,
                   what="the banner")
        admin = f"http://127.0.0.1:{ports['admin']}"
        assert f"dashboard  {admin}/" in (tmp_path / "demo.log").read_text()
        assert "<title>strangler" in httpx.get(admin + "/").text

        def splits(path: str) -> list[tuple[str, dict]]:
            return [(route["name"], route["split"]) for route in httpx.get(admin + path).json()["routes"]]

        # A ramp step may fall between the two reads: they agree once both are read after it.
        wait_until(lambda: splits("/dashboard.json") == splits("/routes"), timeout_s=5,
                   what="the dashboard to show the routes and splits of GET /routes")

        proxy = f"http://127.0.0.1:{ports['listen']}"
        expected = [("GET", "/api/inventory/ESP-001/", "inventory"), ("GET", "/api/payments/1/", "legacy"),
                    ("GET", "/accounts/login/", "legacy")]
        for method, path, upstream in expected:
            assert httpx.request(method, proxy + path).headers["x-strangler-upstream"] == upstream, path
        placed = httpx.post(proxy + "/api/orders/", json={"customer_email": "demo@example.com",
                                                          "lines": [{"sku": "BNS-1KG", "quantity": 1}]})
        assert placed.status_code == 201 and placed.headers["x-strangler-upstream"] == "legacy"
        read = httpx.get(proxy + "/api/orders/1/")
        assert read.status_code == 200 and read.headers["x-strangler-upstream"] in ("orders", "legacy")
        # The demo wires the sides together: the order placed on legacy reaches orders_service as an
        # event, and an order placed through orders_service's saga reaches the monolith.
        order_id = placed.json()["id"]
        orders_service = f"http://127.0.0.1:{ports['orders']}"
        wait_until(lambda: httpx.get(f"{orders_service}/api/orders/{order_id}/").json() == placed.json(),
                   timeout_s=2, what="the legacy order on orders_service")
        by_saga = httpx.post(orders_service + "/api/orders/", timeout=10, json={
            "customer_email": "demo@example.com", "lines": [{"sku": "FLT-100", "quantity": 2}]})
        assert by_saga.status_code == 201 and by_saga.json()["status"] == "paid", by_saga.text
        legacy = f"http://127.0.0.1:{ports['legacy']}"
        wait_until(lambda: httpx.get(f"{legacy}/api/orders/{by_saga.json()['id']}/").json() == by_saga.json(),
                   timeout_s=2, what="the saga's order on the monolith")

        # The monolith's live order status (the order page's WebSocket) through the proxy.
        with httpx.Client(base_url=proxy) as browser:
            token = CSRF_FIELD.search(browser.get("/accounts/login/").text).group(1)
            browser.post("/accounts/login/", data={"email": "bob@example.com", "password": "canwefixit",
                                                   "csrfmiddlewaretoken": token})
            cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        with connect(f"ws://127.0.0.1:{ports['listen']}/orders/{order_id}/live/", proxy=None,
                     additional_headers={"Cookie": cookie}) as live:
            assert json.loads(live.recv(timeout=5)) == {"order_id": order_id, "status": "paid"}

        children = children_of(demo.pid)
        assert len(children) == 5, children  # monolith, three services, proxy
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
        log.close()
    assert code == 0, (tmp_path / "demo.log").read_text()
    assert [pid for pid in children if alive(pid)] == []
