"""Shadow traffic through a real proxy: copies of sampled requests compared with the client's answers.

Upstreams are real servers on loopback; every wait polls the admin API with a deadline.
"""

from __future__ import annotations

import gzip
import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.support.faults import Hanging
from tests.support.metrics import scrape
from tests.support.servers import ProxyProcess, wait_until

ORDERS = {"count": 2, "orders": [{"id": 1, "total_cents": 1999, "status": "paid"},
                                 {"id": 2, "total_cents": 450, "status": "pending"}]}


class JsonUpstream:
    """Answers every request with `document(n)` as JSON (n counts requests from 1) and keeps what it received."""

    def __init__(self, document: Callable[[int], Any], *, gzipped: bool = False,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.document = document
        self.gzipped = gzipped
        self.headers = list(headers)
        self.received: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        with self._lock:
            number = next(self._numbers)
            self.received.append((scope["method"], {k.decode(): v.decode() for k, v in scope["headers"]}))
        body = json.dumps(self.document(number)).encode()
        headers = [(b"content-type", b"application/json"), *self.headers]
        if self.gzipped:
            body = gzip.compress(body)
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def methods(self) -> list[str]:
        with self._lock:
            return [method for method, _ in self.received]


def shadow_config(primary: str, shadow: str, routes: str, *, shadow_options: str = "") -> str:
    options = f", {shadow_options}" if shadow_options else ""
    return f"""
version: 1
access_log: {{enabled: false}}
upstreams:
  legacy: {{url: "{primary}"}}
  orders: {{url: "{shadow}"{options}}}
routes:
{routes}
"""


def route(name: str, path: str, shadow: str = "{upstream: orders}", extra: str = "") -> str:
    return f"""  - name: {name}
    match: {{path: {path}}}
    to: legacy
    shadow: {shadow}
{extra}"""


def report(proxy: ProxyProcess, name: str) -> dict[str, Any]:
    return httpx.get(proxy.admin_url + "/shadow", timeout=5).json()["routes"][name]


def wait_for_counts(proxy: ProxyProcess, name: str, total: int) -> dict[str, Any]:
    """The route's shadow report once `total` copies have been counted."""
    wait_until(lambda: sum(report(proxy, name)["counts"].values()) >= total, timeout_s=15,
               what=f"{total} copies counted on {name}")
    return report(proxy, name)


def test_identical_upstreams_match_every_copy(start_upstream, start_proxy):
    """Key order, number formatting and gzip against identity are no difference: 100% match."""
    reordered = {"orders": [{"status": o["status"], "total_cents": float(o["total_cents"]), "id": o["id"]}
                            for o in ORDERS["orders"]], "count": 2}
    primary, shadow = JsonUpstream(lambda n: ORDERS), JsonUpstream(lambda n: reordered, gzipped=True)
    proxy = start_proxy(shadow_config(start_upstream(primary).url, start_upstream(shadow).url,
                                      route("orders-read", "/api/orders")))
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(20):
            response = client.get("/api/orders/", headers={"X-Strangler-Shadow": "1", "X-Strangler-Route": "forged"})
            assert response.status_code == 200 and response.json() == ORDERS
    found = wait_for_counts(proxy, "orders-read", 20)
    assert found["counts"] == {"match": 20, "mismatch": 0, "noise": 0, "shadow_error": 0, "skipped": 0}
    assert found["match_rate"] == 1.0 and found["fields"] == []
    # The copies say what they are; nothing a client sent can say it for them.
    assert all(headers.get("x-strangler-shadow") == "1" and "x-strangler-route" not in headers
               for _, headers in shadow.received)
    assert not any(name.startswith("x-strangler-") for _, headers in primary.received for name in headers)
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_shadow_requests_total", route="orders-read", shadow="orders", result="match") == 20
    assert metrics.value("strangler_shadow_duration_seconds_count", route="orders-read", shadow="orders") == 20


def test_a_planted_difference_is_reported_at_its_field_path_with_its_count(start_upstream, start_proxy):
    """The shadow rounds totals to whole units: one field, counted once per copy, credentials never kept."""
    primary = start_upstream(JsonUpstream(lambda n: ORDERS))
    rounded = {**ORDERS, "orders": [{**o, "total_cents": round(o["total_cents"], -2)} for o in ORDERS["orders"]]}
    shadow = start_upstream(JsonUpstream(lambda n: rounded, headers=((b"set-cookie", b"sid=shadow-secret"),)))
    proxy = start_proxy(shadow_config(primary.url, shadow.url, route("orders-read", "/api/orders")))
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(10):
            response = client.get("/api/orders/", headers={"Authorization": "Bearer client-secret",
                                                           "Cookie": "session=client-secret"})
            assert response.json() == ORDERS
    found = wait_for_counts(proxy, "orders-read", 10)
    assert found["counts"]["mismatch"] == 10 and found["match_rate"] == 0.0
    assert found["fields"] == [{"field": "$.orders[*].total_cents", "count": 10,
                                "example": {"primary": "1999", "shadow": "2000"}}]
    samples = httpx.get(proxy.admin_url + "/shadow/orders-read/samples").json()["samples"]
    assert len(samples) == 10
    latest = samples[0]
    assert latest["request"]["method"] == "GET" and latest["request"]["target"] == "/api/orders/"
    assert (latest["primary"]["status"], latest["shadow"]["status"]) == (200, 200)
    assert latest["differences"] == [{"field": "$.orders[*].total_cents", "primary": "1999", "shadow": "2000"}]
    assert "secret" not in json.dumps(samples)
    assert ["authorization", "(removed)"] in [[k.lower(), v] for k, v in latest["request"]["headers"]]
    assert httpx.get(proxy.admin_url + "/shadow/nope/samples").status_code == 404


def test_a_timestamp_is_noise_with_noise_learn_and_a_mismatch_without(start_upstream, start_proxy):
    """A field that differs on every call differs between two primary answers too: with learning it is noise."""
    calls = itertools.count(1)      # one clock for both sides: no two answers carry the same stamp
    stamped = lambda _: {"id": 7, "generated_at": f"2026-12-06T10:00:{next(calls):06d}Z"}  # noqa: E731
    primary = start_upstream(JsonUpstream(stamped))
    shadow = start_upstream(JsonUpstream(stamped))
    routes = route("learning", "/learn", "{upstream: orders, compare: {noise: learn}}") + route("plain", "/plain")
    proxy = start_proxy(shadow_config(primary.url, shadow.url, routes))
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(5):
            assert client.get("/learn").status_code == 200
            assert client.get("/plain").status_code == 200
    learning, plain = wait_for_counts(proxy, "learning", 5), wait_for_counts(proxy, "plain", 5)
    assert learning["counts"]["noise"] == 5 and learning["counts"]["mismatch"] == 0
    assert learning["noise_fields"][0]["field"] == "$.generated_at" and learning["match_rate"] == 1.0
    assert plain["counts"]["mismatch"] == 5
    assert [field["field"] for field in plain["fields"]] == ["$.generated_at"]


def test_a_post_is_never_copied_by_default(start_upstream, start_proxy):
    primary, shadow = JsonUpstream(lambda n: {"ok": True}), JsonUpstream(lambda n: {"ok": True})
    proxy = start_proxy(shadow_config(start_upstream(primary).url, start_upstream(shadow).url,
                                      route("orders", "/api/orders")))
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(5):
            assert client.post("/api/orders/", json={"sku": "A-1"}).status_code == 200
            assert client.get("/api/orders/").status_code == 200
    wait_for_counts(proxy, "orders", 5)
    assert primary.methods().count("POST") == 5
    assert shadow.methods() == ["GET"] * 5


def test_a_hanging_shadow_leaves_the_clients_answers_unchanged_and_counts_shadow_error(start_upstream, start_proxy):
    primary = start_upstream(JsonUpstream(lambda n: ORDERS))
    hanging = Hanging().start()
    try:
        proxy = start_proxy(shadow_config(primary.url, hanging.url, route("orders-read", "/api/orders"),
                                          shadow_options="timeout: 300ms"))
        with httpx.Client(base_url=proxy.url, timeout=10) as client:
            for _ in range(30):
                response = client.get("/api/orders/")
                assert response.status_code == 200 and response.json() == ORDERS
                assert response.headers["x-strangler-upstream"] == "legacy"
        wait_until(lambda: report(proxy, "orders-read")["counts"]["shadow_error"] >= 5, timeout_s=15,
                   what="the hanging shadow's copies counted as shadow_error")
        found = wait_for_counts(proxy, "orders-read", 30)
        assert found["errors"]["timeout"] == found["counts"]["shadow_error"]
        assert found["counts"]["match"] == found["counts"]["mismatch"] == 0
        # Past its breaker's threshold, later copies are skipped without being sent.
        assert found["counts"]["shadow_error"] + found["counts"]["skipped"] == 30
        metrics = scrape(proxy.admin_url)
        assert metrics.value("strangler_shadow_requests_total", route="orders-read",
                             result="shadow_error") == found["counts"]["shadow_error"]
        assert metrics.value("strangler_requests_total", route="orders-read", upstream="legacy", code="200") == 30
    finally:
        hanging.stop()


class LargeAnswers:
    """Answers `size` bytes in 64 KiB chunks, without a Content-Length: the reader cannot know the end."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        chunk = b"x" * 65536
        for _ in range(self.size // len(chunk)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def test_a_shadow_answering_10_mib_keeps_the_proxys_memory_bounded(start_upstream, start_proxy):
    """1,000 requests whose copies each get 10 MiB back: the proxy reads at most max_body of each."""
    primary = start_upstream(LargeAnswers(64 * 1024))
    shadow = start_upstream(LargeAnswers(10 * 1024 * 1024))
    proxy = start_proxy(shadow_config(primary.url, shadow.url, route(
        "export", "/export", "{upstream: orders, max_body: 256KiB, max_concurrent: 8}")))

    def get_many(count: int) -> None:
        def get(_: int) -> None:
            with httpx.Client(base_url=proxy.url, timeout=10) as client:
                for _ in range(count // 8):
                    response = client.get("/export")
                    assert response.status_code == 200 and len(response.content) == 64 * 1024
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(get, range(8)))

    get_many(200)
    wait_until(lambda: report(proxy, "export")["in_flight"] == 0, what="copies done")
    before = proxy.rss_bytes()
    get_many(1000)
    found = wait_for_counts(proxy, "export", 1200)
    wait_until(lambda: report(proxy, "export")["in_flight"] == 0, what="copies done")
    growth = proxy.rss_bytes() - before
    assert growth < 20 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
    assert found["counts"]["skipped"] == 1200
    assert found["skipped"]["shadow_body_too_large"] > 0


def test_a_reload_keeps_the_counts_of_routes_whose_shadow_did_not_change(start_upstream, start_proxy):
    primary = start_upstream(JsonUpstream(lambda n: ORDERS))
    shadow = start_upstream(JsonUpstream(lambda n: ORDERS))
    text = shadow_config(primary.url, shadow.url, route("kept", "/kept") + route("changed", "/changed"))
    proxy = start_proxy(text)
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(3):
            client.get("/kept")
            client.get("/changed")
    wait_for_counts(proxy, "kept", 3)
    wait_for_counts(proxy, "changed", 3)
    # The kept route changes too, but not its shadow block.
    edited = shadow_config(primary.url, shadow.url, route("kept", "/kept", extra="    timeout: 5s\n")
                           + route("changed", "/changed", "{upstream: orders, max_concurrent: 4}"))
    proxy.config_path.write_text(edited)
    assert httpx.post(proxy.admin_url + "/reload").status_code == 200
    assert report(proxy, "kept")["counts"]["match"] == 3
    assert report(proxy, "changed")["counts"]["match"] == 0
    assert report(proxy, "changed")["max_concurrent"] == 4


def test_with_workers_the_report_adds_up_every_workers_copies(start_upstream, start_proxy):
    """Each worker compares its own copies; /shadow on the parent's admin listener counts them all."""
    primary = start_upstream(JsonUpstream(lambda n: ORDERS))
    shadow = start_upstream(JsonUpstream(lambda n: {**ORDERS, "count": 3}))
    proxy = start_proxy(shadow_config(primary.url, shadow.url, route("orders-read", "/api/orders")), "--workers", "2")
    for _ in range(20):
        assert httpx.get(proxy.url + "/api/orders/").json() == ORDERS      # a new connection each: both workers serve
    found = wait_for_counts(proxy, "orders-read", 20)
    assert found["counts"]["mismatch"] == 20 and found["across_workers"] is True and found["match_rate"] == 0.0
