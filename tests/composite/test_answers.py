"""Composite routes against real upstreams on loopback: one proxy, one route per behaviour.

What is checked by the order of events, never by timing: parts are fetched at once (each
part's upstream holds it until every part has arrived), a broken breaker or a full bulkhead
skips a part without a connection (the upstream's count does not move).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.faults import FaultServer, Hanging, Received, RefusedPort, Scripted, _write_response
from tests.support.metrics import routes, scrape
from tests.support.rawhttp import RawConnection
from tests.support.servers import GetInThread, ProxyProcess, wait_until

BARRIER = 3


class JsonParts(FaultServer):
    """Answers by path: `/json/...` 200 with JSON describing the request (target and headers),
    `/status/N` that status with a JSON body, `/text` 200 text, `/big` 2 KiB of JSON,
    `/barrier/ID` 200 JSON only once BARRIER requests for that ID have arrived, `/hold/ID` never
    (until the server stops) and `/after/ID/status/N` status N once `/hold/ID` has arrived."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived: dict[str, int] = {}
        self._complete: dict[str, asyncio.Event] = {}      # by ID: every barrier request, or the held one, came

    async def respond(self, index: int, request: Received, writer: asyncio.StreamWriter) -> bool:
        target = request.target
        status, body, kind = 200, json.dumps({"target": target, "headers": [
            [name.decode("latin-1").lower(), value.decode("latin-1")] for name, value in request.headers]}), "json"
        if target.startswith("/after/"):
            await self._event(target.split("/")[2]).wait()
            target = "/" + target.split("/", 3)[3]
        if target.startswith("/status/"):
            status = int(target.split("/")[2])
        elif target.startswith("/text"):
            body, kind = "plain text, not JSON", "plain"
        elif target.startswith("/big"):
            body = json.dumps({"pad": "x" * 2048})
        elif target.startswith("/barrier/"):
            key = target.split("/")[2]
            self._arrived[key] = self._arrived.get(key, 0) + 1
            if self._arrived[key] >= BARRIER:
                self._event(key).set()
            await self._event(key).wait()
        elif target.startswith("/hold/"):
            self._event(target.split("/")[2]).set()
            await self.held()
        content_type = "application/json" if kind == "json" else "text/plain"
        await _write_response(writer, status, [("Content-Type", content_type)], body.encode(),
                              head_only=request.method == "HEAD")
        return True

    def _event(self, key: str) -> asyncio.Event:
        return self._complete.setdefault(key, asyncio.Event())


class Composite:
    def __init__(self, proxy: ProxyProcess, servers: dict[str, FaultServer | RefusedPort]) -> None:
        self.proxy, self.servers = proxy, servers

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.proxy.url + path, timeout=20, **kwargs)


CONFIG = """
version: 1
access_log: {{format: json}}
upstreams:
  parts: {{url: "{parts}"}}
  down: {{url: "{down}"}}
  slow: {{url: "{slow}"}}
  flaky: {{url: "{flaky}"}}
  narrow: {{url: "{narrow}", max_concurrent: 1}}
defaults:
  retry: {{attempts: 2, backoff: {{initial: 10ms, max: 20ms}}}}
routes:
  - name: all
    match: {{path: "/all/{{id}}"}}
    compose:
      order: {{upstream: parts, path: "/json/orders/{{id}}/", required: true}}
      payment: {{upstream: parts, path: "/json/payments/?order_id={{id}}"}}
      shipping: {{upstream: parts, path: "/json/shipping/{{id}}"}}
  - name: concurrent
    match: {{path: "/concurrent/{{id}}"}}
    timeout: 20s
    compose:
      a: {{upstream: parts, path: "/barrier/{{id}}", required: true}}
      b: {{upstream: parts, path: "/barrier/{{id}}", required: true}}
      c: {{upstream: parts, path: "/barrier/{{id}}", required: true}}
  - name: optional
    match: {{path: "/optional/{{id}}"}}
    compose:
      order: {{upstream: parts, path: "/json/orders/{{id}}/", required: true}}
      down: {{upstream: down, path: "/json/{{id}}"}}
      broken: {{upstream: parts, path: "/status/500"}}
      text: {{upstream: parts, path: "/text"}}
      big: {{upstream: parts, path: "/big", max_body_size: 1KiB}}
  - name: deadline
    match: {{path: "/deadline/{{which}}"}}
    timeout: 300ms
    compose:
      order: {{upstream: parts, path: "/json/orders/{{which}}/", required: true}}
      slow: {{upstream: slow, path: "/hang/{{which}}"}}
  - name: deadline-required
    match: {{path: "/deadline-required/{{id}}"}}
    timeout: 300ms
    compose:
      order: {{upstream: slow, path: "/hang/{{id}}", required: true}}
  - name: required-404
    match: {{path: "/required-404/{{id}}"}}
    circuit_breaker: {{failure_threshold: 1}}
    compose:
      order: {{upstream: parts, path: "/after/{{id}}/status/404", required: true}}
      payment: {{upstream: parts, path: "/hold/{{id}}"}}
  - name: required-down
    match: {{path: "/required-down/{{id}}"}}
    compose:
      order: {{upstream: down, path: "/orders/{{id}}", required: true}}
      payment: {{upstream: parts, path: "/json/{{id}}"}}
  - name: breaker
    match: {{path: "/breaker/{{id}}"}}
    retry: {{attempts: 1}}
    circuit_breaker: {{failure_threshold: 1, recovery_timeout: 10m}}
    compose:
      order: {{upstream: parts, path: "/json/{{id}}", required: true}}
      flaky: {{upstream: flaky, path: "/flaky/{{id}}"}}
  - name: bulkhead
    match: {{path: "/bulkhead/{{id}}"}}
    compose:
      order: {{upstream: parts, path: "/json/{{id}}", required: true}}
      narrow: {{upstream: narrow, path: "/narrow/{{id}}"}}
  - name: hold
    match: {{path: /hold}}
    to: narrow
"""


@pytest.fixture(scope="module")
def composite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Composite]:
    servers: dict[str, FaultServer | RefusedPort] = {
        "parts": JsonParts(), "down": RefusedPort(), "slow": Hanging(), "flaky": Scripted(then=500),
        "narrow": Hanging(),
    }
    for server in servers.values():
        server.start()
    path = tmp_path_factory.mktemp("compose") / "routes.yaml"
    path.write_text(CONFIG.format(**{name: server.url for name, server in servers.items()}))
    proxy = ProxyProcess(path).start()
    try:
        yield Composite(proxy, servers)
    finally:
        for server in servers.values():
            server.stop()      # held answers released first, so the proxy stops without waiting on them
        proxy.terminate()


def _access_line(proxy: ProxyProcess, request_id: str) -> dict:
    line = {}

    def logged() -> bool:
        nonlocal line
        found = [json.loads(text) for text in proxy.log().splitlines() if f'"rid": "{request_id}"' in text]
        line = found[0] if found else {}
        return bool(found)

    wait_until(logged, what=f"the access log line of {request_id}")
    return line


def test_every_part_answers_and_the_composite_is_their_json_keyed_by_name(composite):
    response = composite.get("/all/7")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "x-strangler-partial" not in response.headers
    assert response.headers["x-strangler-route"] == "all"
    body = response.json()
    assert list(body) == ["order", "payment", "shipping", "partial"]
    assert body["partial"] == []
    assert [body[part]["target"] for part in ("order", "payment", "shipping")] == [
        "/json/orders/7/", "/json/payments/?order_id=7", "/json/shipping/7"]
    listed = next(route for route in routes(composite.proxy.admin_url)["routes"] if route["name"] == "all")
    assert listed["compose"]["order"] == {"upstream": "parts", "path": "/json/orders/{id}/", "required": True}
    assert listed["match"]["path"] == "/all/{id}" and listed["split"] == {}


def test_each_part_receives_the_headers_a_plain_route_forwards_and_the_same_request_id(composite):
    """Hop-by-hop fields out, X-Forwarded-* set by the proxy, the client's cookie and one X-Request-ID; what
    describes the composite (Accept-Encoding, conditionals) is not passed on, so each part answers its whole JSON."""
    response = composite.get("/all/8", headers={
        "Cookie": "sessionid=abc", "X-Request-ID": "compose-headers-1", "Connection": "X-Hop", "X-Hop": "1",
        "X-Forwarded-For": "203.0.113.9", "Accept-Encoding": "gzip", "If-None-Match": '"v1"', "X-Custom": "kept"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "compose-headers-1"
    for part in ("order", "payment", "shipping"):
        headers = dict(response.json()[part]["headers"])
        assert headers["cookie"] == "sessionid=abc"
        assert headers["x-request-id"] == "compose-headers-1"
        assert headers["x-forwarded-for"] == "127.0.0.1"      # the client is not a trusted proxy
        assert headers["x-forwarded-proto"] == "http" and headers["via"] == "1.1 strangler"
        assert headers["x-custom"] == "kept"
        assert headers["accept-encoding"] == "identity" and headers["accept"] == "application/json"
        assert not {"x-hop", "connection", "if-none-match"} & set(headers), headers


def test_parts_are_fetched_at_once(composite):
    """Each part's answer waits until all three parts have reached the upstream: fetched one after another,
    the first would wait for the others forever (and the route's deadline would end it)."""
    response = composite.get("/concurrent/first")
    assert response.status_code == 200, response.text
    assert sorted(response.json()) == ["a", "b", "c", "partial"]
    assert len([r for r in composite.servers["parts"].requests() if r.target == "/barrier/first"]) == 3


def test_optional_parts_that_fail_are_null_and_listed_with_their_reason(composite):
    response = composite.get("/optional/9", headers={"X-Request-ID": "compose-partial-1"})
    assert response.status_code == 200
    assert response.headers["x-strangler-partial"] == "down,broken,text,big"
    body = response.json()
    assert body["order"]["target"] == "/json/orders/9/"
    assert [body[name] for name in ("down", "broken", "text", "big")] == [None] * 4
    assert body["partial"] == [
        {"part": "down", "reason": "connect_error"},
        {"part": "broken", "reason": "http_5xx", "status": 500},
        {"part": "text", "reason": "not_json", "status": 200},
        {"part": "big", "reason": "too_large", "status": 200},
    ]
    metrics = scrape(composite.proxy.admin_url)
    for part, outcome in [("order", "ok"), ("down", "connect_error"), ("broken", "http_5xx"), ("text", "not_json"),
                          ("big", "too_large")]:
        assert metrics.value("strangler_compose_parts_total", route="optional", part=part, outcome=outcome) == 1
    line = _access_line(composite.proxy, "compose-partial-1")
    assert line["status"] == 200 and line["route"] == "optional"
    assert {name: part["outcome"] for name, part in line["parts"].items()} == {
        "order": "ok", "down": "connect_error", "broken": "http_5xx", "text": "not_json", "big": "too_large"}
    assert all(isinstance(part["ms"], float) for part in line["parts"].values())
    assert line["parts"]["down"]["attempts"] == 2            # retried as any GET on a connect error


def test_the_deadline_leaves_a_slow_optional_part_null_and_a_slow_required_part_a_504(composite):
    partial = composite.get("/deadline/optional")
    assert partial.status_code == 200
    assert partial.json()["slow"] is None and partial.json()["partial"] == [{"part": "slow", "reason": "timeout"}]
    whole_failed = composite.get("/deadline-required/1")
    assert whole_failed.status_code == 504
    problem = whole_failed.json()
    assert (problem["reason"], problem["part"], problem["upstream"]) == ("timeout", "order", "slow")
    assert "required part 'order'" in problem["detail"]


def test_a_required_part_404_makes_the_whole_a_404_at_once_naming_it(composite):
    """The 404 (sent once the other part is at the upstream) decides the answer: the part still waiting is
    abandoned, which its upstream's breaker does not count (one failure would open it)."""
    response = composite.get("/required-404/1")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["part"], problem["upstream"], problem["route"]) == (404, "order", "parts",
                                                                                          "required-404")
    metrics = scrape(composite.proxy.admin_url)
    assert metrics.value("strangler_compose_parts_total", route="required-404", part="payment",
                         outcome="abandoned") == 1
    assert metrics.value("strangler_circuit_breaker_state", route="required-404", upstream="parts") == 0
    assert metrics.value("strangler_upstream_attempts_total", route="required-404", upstream="parts",
                         outcome="timeout") == 0


def test_a_required_part_that_cannot_be_reached_makes_the_whole_a_502_naming_it(composite):
    response = composite.get("/required-down/1")
    assert response.status_code == 502
    problem = response.json()
    assert (problem["reason"], problem["part"], problem["upstream"]) == ("connect_error", "order", "down")
    assert problem["detail"].startswith("required part 'order' (down): ")


def test_an_open_breaker_skips_its_part_without_a_connection(composite):
    flaky = composite.servers["flaky"]
    first = composite.get("/breaker/1")
    assert first.json()["partial"] == [{"part": "flaky", "reason": "http_5xx", "status": 500}]
    assert flaky.count == 1                                   # one failure opens this breaker
    second = composite.get("/breaker/2")
    assert second.status_code == 200 and second.json()["order"]["target"] == "/json/2"
    assert second.json()["partial"] == [{"part": "flaky", "reason": "circuit_open"}]
    assert flaky.count == 1


def test_a_full_bulkhead_skips_its_part_at_once(composite):
    narrow = composite.servers["narrow"]
    held = GetInThread(composite.proxy.url + "/hold")
    wait_until(lambda: narrow.count == 1, what="the one request narrow allows, in flight")
    response = composite.get("/bulkhead/1")
    assert response.status_code == 200
    assert response.json()["partial"] == [{"part": "narrow", "reason": "bulkhead_full"}]
    assert narrow.count == 1
    narrow.release()
    held.join()
    assert held.response().status_code == 200


def test_head_has_the_headers_of_get_and_other_methods_are_405(composite):
    head = httpx.head(composite.proxy.url + "/all/5", timeout=10)
    get = composite.get("/all/5")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert int(head.headers["content-length"]) > 0
    assert all(request.method == "GET" for request in composite.servers["parts"].requests())
    assert get.status_code == 200
    post = httpx.post(composite.proxy.url + "/all/5", json={}, timeout=10)
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    assert post.json()["reason"] == "method_not_allowed"


@pytest.mark.parametrize(("target", "status", "order_target"), [
    (b"/all/;", 200, "/json/orders/%3B/"),
    (b"/all/%3F", 200, "/json/orders/%3F/"),
    (b"/all/%23", 200, "/json/orders/%23/"),
    (b"/all/..%2f", 400, None),                 # an encoded slash is refused before routing
    (b"/all/..%2fadmin", 400, None),
    (b"/all/%2e%2e", 404, None),                # resolved to /: no route
    (b"/all/x/%2e%2e/%2e%2e/admin", 404, None),  # /admin: no route either
])
def test_a_capture_never_leaves_its_segment(composite, target, status, order_target):
    """`;`, `?`, `#` are encoded in their segment; encoded slashes and dot segments never reach a part."""
    before = len(composite.servers["parts"].requests())
    connection = RawConnection(composite.proxy.port)
    try:
        response = connection.request("GET", target)
    finally:
        connection.sock.close()
    assert response.status == status, response.body
    if order_target is None:
        assert len(composite.servers["parts"].requests()) == before
        return
    body = json.loads(response.body)
    assert body["order"]["target"] == order_target
    assert body["payment"]["target"] == "/json/payments/?order_id=" + order_target.split("/")[3]
