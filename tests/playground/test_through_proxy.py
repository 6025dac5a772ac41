"""The playground behind the proxy, routed by the shipped config/routes.yaml.

What a browser and an API client see through strangler: each route reaches the side
the config names, logins and CSRF-protected forms work, redirects point at the proxy,
gzip bodies arrive intact, and the CSV export and uploads stream through.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import strangler.app  # noqa: F401 - the proxy these tests run in a subprocess: a broken import fails here
from extracted_services.common.app import build_app as build_service_app
from legacy_monolith import settings
from legacy_monolith.asgi import build_app as build_monolith_app
from legacy_monolith.db import Database
from legacy_monolith.orders.models import list_orders
from legacy_monolith.shipping.models import ship_order
from tests.contract.seeding import SERVICES, seed_everything
from tests.playground.conftest import CSRF_FIELD
from tests.support.servers import REPO, ProxyProcess, ThreadedServer

SHIPPED_CONFIG = REPO / "config" / "routes.yaml"


class Playground:
    def __init__(self, proxy: ProxyProcess, servers: dict[str, ThreadedServer], data_dir: Path) -> None:
        self.proxy, self.servers, self.data_dir = proxy, servers, data_dir
        self.direct = {name: server.url for name, server in servers.items()}

    def browser(self) -> httpx.Client:
        return httpx.Client(base_url=self.proxy.url, timeout=10)


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    """Monolith and services on real ports with seeded data, and the proxy with the shipped routes."""
    data_dir = tmp_path_factory.mktemp("playground")
    seed_everything(data_dir)
    servers = {"legacy": ThreadedServer(build_monolith_app(data_dir)).start()}
    for name, service in SERVICES.items():
        servers[name] = ThreadedServer(build_service_app(service, data_dir)).start()
    config = SHIPPED_CONFIG.read_text()
    for name, port in [("legacy", 8001), ("orders", 8101), ("inventory", 8102), ("payments", 8103)]:
        assert f"http://127.0.0.1:{port}\n" in config, f"the shipped config moved {name} off port {port}"
        config = config.replace(f"http://127.0.0.1:{port}\n", servers[name].url + "\n")
    config_path = data_dir / "routes.yaml"
    config_path.write_text(config)
    proxy = ProxyProcess(config_path).start()
    try:
        yield Playground(proxy, servers, data_dir)
    finally:
        proxy.terminate()
        for server in servers.values():
            server.stop()


def log_in(client: httpx.Client, email: str, password: str) -> httpx.Response:
    token = CSRF_FIELD.search(client.get("/accounts/login/").text).group(1)
    return client.post("/accounts/login/", data={"email": email, "password": password, "csrfmiddlewaretoken": token})


@pytest.mark.parametrize(("method", "path", "route", "upstream"), [
    ("GET", "/api/inventory/ESP-001/", "inventory", "inventory"),
    ("GET", "/api/inventory/", "inventory", "inventory"),
    ("GET", "/api/payments/1/", "payments", "legacy"),
    ("GET", "/shipping/", "everything-else", "legacy"),
    ("GET", "/", "everything-else", "legacy"),
])
def test_each_route_reaches_the_side_the_config_names(playground: Playground, method: str, path: str, route: str,
                                                      upstream: str) -> None:
    with playground.browser() as client:
        response = client.request(method, path)
    assert response.status_code == 200
    assert (response.headers["x-strangler-route"], response.headers["x-strangler-upstream"]) == (route, upstream)


def test_order_writes_stay_on_legacy_and_point_back_at_the_proxy(playground: Playground) -> None:
    with playground.browser() as client:
        response = client.post("/api/orders/", json={"customer_email": "eve@example.com",
                                                     "lines": [{"sku": "FLT-100", "quantity": 2}]})
    assert response.status_code == 201 and response.headers["x-strangler-upstream"] == "legacy"
    assert response.headers["location"] == f"{playground.proxy.url}/api/orders/{response.json()['id']}/"


def test_order_reads_split_by_cohort_and_both_sides_agree(playground: Playground) -> None:
    """The ramp's first step (5%) of cohorts read from the orders service; each cohort always lands on one side."""
    sides: dict[str, set[str]] = {}
    bodies = {}
    with playground.browser() as client:
        for cohort in (hashlib.sha256(b"visitor %d" % n).hexdigest()[:32] for n in range(100)):
            for _ in range(2):
                response = client.get("/api/orders/3/", headers={"Cookie": f"strangler_cohort={cohort}"})
                assert response.status_code == 200 and "set-cookie" not in response.headers
                sides.setdefault(cohort, set()).add(response.headers["x-strangler-upstream"])
                bodies[response.headers["x-strangler-upstream"]] = response.json()
    assert all(len(seen) == 1 for seen in sides.values()), "a cohort moved between sides"
    on_service = sum(seen == {"orders"} for seen in sides.values())
    assert 1 <= on_service <= 15, f"{on_service} of 100 cohorts on the orders service"
    assert bodies["orders"] == bodies["legacy"]


def test_login_then_csrf_protected_form_post(playground: Playground) -> None:
    with playground.browser() as client:
        login = log_in(client, "alice@example.com", "wonderland")
        assert login.status_code == 302 and login.headers["location"] == f"{playground.proxy.url}/accounts/profile/"
        assert "Alice Liddell" in client.get("/accounts/profile/").text
        form = client.get("/orders/new/")
        token = CSRF_FIELD.search(form.text).group(1)
        placed = client.post("/orders/new/", data={"csrfmiddlewaretoken": token, "qty_SCL-DIG": "1"})
        assert placed.status_code == 302 and placed.headers["location"].startswith(f"{playground.proxy.url}/orders/")
        assert "Digital scale" in client.get(placed.headers["location"]).text
        forged = client.post("/orders/new/", data={"qty_SCL-DIG": "1"})
        assert forged.status_code == 403


def test_missing_slash_redirect_points_at_the_proxy(playground: Playground) -> None:
    with playground.browser() as client:
        response = client.get("/shipping?page=2")
    assert response.status_code == 301
    assert response.headers["location"] == f"{playground.proxy.url}/shipping/?page=2"


def test_gzip_body_arrives_intact(playground: Playground) -> None:
    """The proxy passes Content-Encoding through: the compressed bytes decode to what the upstream sent."""
    with playground.browser() as client:
        with client.stream("GET", "/api/orders/", headers={"Accept-Encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    # Compare with the side that answered: writes since the import live only in the monolith.
    direct = httpx.get(playground.direct[response.headers["x-strangler-upstream"]] + "/api/orders/").json()
    assert json.loads(gzip.decompress(raw)) == direct


def test_csv_export_streams_through(playground: Playground) -> None:
    with playground.browser() as client:
        log_in(client, "bob@example.com", "canwefixit")
        with client.stream("GET", "/orders/export.csv") as response:
            assert response.status_code == 200 and "content-length" not in response.headers
            chunks = list(response.iter_text())
    rows = "".join(chunks).splitlines()
    assert rows[0].startswith("order_id,") and len(rows) > 40
    assert all(re.match(r"^\d+,", row) for row in rows[1:])


def test_upload_streams_through_unchanged(playground: Playground) -> None:
    content = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)  # 3 MiB
    with playground.browser() as client:
        token = CSRF_FIELD.search(client.get("/uploads/").text).group(1)
        response = client.post("/uploads/", data={"csrfmiddlewaretoken": token},
                               files={"file": ("big.bin", content, "application/octet-stream")})
    assert response.status_code == 200
    assert hashlib.sha256(content).hexdigest() in response.text


def test_the_order_page_follows_its_status_live_over_a_websocket_through_the_proxy(playground: Playground) -> None:
    """The monolith's live endpoint, through the shipped config: the status now, then the change."""
    database = Database(playground.data_dir / settings.DATABASE_NAME)
    order = next(order for order in list_orders(database) if order["status"] == "paid")
    live = playground.proxy.url.replace("http://", "ws://") + f"/orders/{order['id']}/live/"
    with playground.browser() as client:
        log_in(client, "bob@example.com", "canwefixit")
        page = client.get(f"/orders/{order['id']}/")
        assert f"/orders/{order['id']}/live/" in page.text
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    with connect(live, additional_headers={"Cookie": cookie}, proxy=None, open_timeout=5) as socket:
        assert socket.response.headers["x-strangler-route"] == "everything-else"
        assert json.loads(socket.recv(timeout=5)) == {"order_id": order["id"], "status": "paid"}
        ship_order(database, order_id=order["id"], carrier="DHL", tracking_number="LIVE-1", shipped_at="2026-12-07")
        assert json.loads(socket.recv(timeout=10)) == {"order_id": order["id"], "status": "shipped"}
    with pytest.raises(InvalidStatus) as refused:           # not logged in: the order is not theirs to watch
        connect(live, proxy=None, open_timeout=5)
    assert refused.value.response.status_code == 403
