"""The shop and its services on real ports, wired to keep each other's data in sync, for the data tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from extracted_services.common.app import build_app as build_service_app
from domain_events.wiring import Wiring
from legacy_monolith.asgi import build_app as build_monolith_app
from tests.contract.seeding import SERVICES
from tests.support.seeded import data_dir, seeded_template  # noqa: F401  (fixtures)
from tests.support.servers import ThreadedServer

TOKEN = "data-tests-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Quick to retry and to give up, so that the tests stay short; the relay ticks as shipped (0.1 s).
FAST = Wiring(events_token=TOKEN, relay_backoff_initial_s=0.05, relay_backoff_max_s=0.5, call_timeout_s=2.0,
              call_connect_timeout_s=0.5, saga_retry_initial_s=0.05, saga_retry_max_s=0.2,
              breaker_recovery_timeout_s=1.0)
DATABASES = {"legacy": "legacy.sqlite3", "orders": "orders.sqlite3", "inventory": "inventory.sqlite3",
             "payments": "payments.sqlite3"}


class LateApp:
    """An ASGI app chosen after its server has a port: the wiring needs every side's URL first."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def serving(app: Any = None) -> ThreadedServer:
    """A real uvicorn on 127.0.0.1 that runs the app's lifespan (its outbox relay, its sagas)."""
    server = ThreadedServer(app or LateApp())
    server.server.config.lifespan = "on"
    return server


@dataclass
class Shop:
    data_dir: Path
    servers: dict[str, ThreadedServer]
    apps: dict[str, Any] = field(default_factory=dict)

    def url(self, side: str) -> str:
        return self.servers[side].url

    def client(self, side: str, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url(side), timeout=20, **kwargs)

    def get(self, side: str, path: str) -> httpx.Response:
        return httpx.get(self.url(side) + path, headers=AUTH, timeout=10)

    def post(self, side: str, path: str, json: Any = None) -> httpx.Response:
        return httpx.post(self.url(side) + path, json=json, headers=AUTH, timeout=20)

    def query(self, side: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.data_dir / DATABASES[side], timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def start_shop(data_dir: Path) -> Iterator[Callable[..., Shop]]:
    """Start the monolith and the three services, each publishing to the other side.

    `payments` names the side the order saga charges through: "legacy" (as shipped,
    until payments is extracted) or "payments". `sides` leaves some out.
    """
    started: list[Shop] = []

    def start(*, payments: str = "legacy", sides: tuple[str, ...] = ("legacy", "orders", "inventory", "payments"),
              **wiring: Any) -> Shop:
        servers = {side: serving() for side in sides}
        urls = {side: server.url for side, server in servers.items()}
        base = FAST.with_(**wiring)
        shop = Shop(data_dir, servers)
        for side in sides:
            if side == "legacy":
                publish = tuple((name, url) for name, url in urls.items() if name != "legacy")
                app = build_monolith_app(data_dir, wiring=base.with_(publish_to=publish))
            else:
                publish = (("legacy", urls["legacy"]),) if "legacy" in urls else ()
                peers = tuple((peer, urls[name]) for peer, name in (("inventory", "inventory"), ("payments", payments))
                              if name in urls)
                app = build_service_app(SERVICES[side], data_dir, wiring=base.with_(publish_to=publish, peers=peers))
            servers[side].server.config.app.app = app
            shop.apps[side] = app
        for server in servers.values():
            server.start()
        started.append(shop)
        return shop

    yield start
    for shop in reversed(started):
        shop.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    wanted = name + ("{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if _same_sample(sample, wanted):
            return float(value)
    return 0.0


def _same_sample(sample: str, wanted: str) -> bool:
    if "{" not in sample or "{" not in wanted:
        return sample == wanted
    name, _, labels = sample.partition("{")
    wanted_name, _, wanted_labels = wanted.partition("{")
    return name == wanted_name and sorted(labels.rstrip("}").split(",")) == sorted(wanted_labels.rstrip("}").split(","))
