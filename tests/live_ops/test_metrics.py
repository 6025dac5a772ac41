"""What an operator watches: exact metrics, health, the admin listener kept off the public port, the access log."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter

import httpx

from tests.support.configs import catch_all
from tests.support.metrics import Scrape, scrape
from tests.support.servers import wait_until


class Upstream:
    """Answers with its name; /…missing is 404; /health follows `healthy`; records the X-Request-IDs it got."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.request_ids: list[list[str]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        if path == "/health":
            status, body = (200, b"ok") if self.healthy else (503, b"down")
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        ids = [value.decode() for name, value in scope["headers"] if name == b"x-request-id"]
        with self._lock:
            self.request_ids.append(ids)
        status = 404 if path.endswith("missing") else 200
        # Like many frameworks, echo the request id back.
        headers = [(b"content-type", b"text/plain")] + [(b"x-request-id", value.encode()) for value in ids]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": self.name.encode()})


def requests_by_labels(metrics: Scrape) -> dict[tuple[str, str, str, str], float]:
    found = {}
    for sample in metrics.matching("strangler_requests_total"):
        labels = sample.labels
        if sample.value:
            found[(labels["route"], labels["upstream"], labels["method"], labels["code"])] = sample.value
    return found


def test_metrics_count_exactly_what_was_sent(start_upstream, start_proxy) -> None:
    a_app, b_app = Upstream("a"), Upstream("b")
    a, b = start_upstream(a_app), start_upstream(b_app)
    config = f"""
version: 1
upstreams:
  a: {{url: "{a.url}"}}
  b: {{url: "{b.url}", health: {{path: /health, interval: 200ms}}}}
routes:
  - name: split
    match: {{path: /split}}
    split: {{a: 30, b: 70}}
    sticky: none
  - name: only-a
    match: {{path: /a}}
    to: a
"""
    proxy = start_proxy(config)
    expected: Counter[tuple[str, str, str, str]] = Counter()
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        for method, count in (("GET", 40), ("POST", 10)):
            for _ in range(count):
                response = client.request(method, "/split", content=b"x" if method == "POST" else None)
                assert response.status_code == 200
                expected["split", response.headers["x-strangler-upstream"], method, "200"] += 1
        for _ in range(5):
            assert client.get("/a/1").status_code == 200
        expected["only-a", "a", "GET", "200"] += 5
        for _ in range(3):
            assert client.get("/a/missing").status_code == 404      # the upstream's own 404
        expected["only-a", "a", "GET", "404"] += 3
        for _ in range(2):
            assert client.get("/nowhere").status_code == 404        # no route: the proxy's 404
        expected["", "", "GET", "404"] += 2

        # The admin listener is not on the public port: /metrics there is just an unrouted path.
        public = client.get("/metrics")
        assert public.status_code == 404
        assert public.headers["content-type"] == "application/problem+json"
        assert "strangler_requests_total" not in public.text
        expected["", "", "GET", "404"] += 1
    assert {key[1] for key in expected if key[0] == "split"} == {"a", "b"}

    total = sum(expected.values())
    # The count is taken once the response is sent, so the last one may land a moment after the client has it.
    wait_until(lambda: scrape(proxy.admin_url).value("strangler_requests_total") == total, timeout_s=5,
               what=f"{total} requests counted")
    metrics = scrape(proxy.admin_url)
    assert requests_by_labels(metrics) == dict(expected)

    durations = {(s.labels["route"], s.labels["upstream"]): s.value
                 for s in metrics.matching("strangler_request_duration_seconds_count") if s.value}
    per_pair: Counter[tuple[str, str]] = Counter()
    for (route, upstream, _, _), count in expected.items():
        if route:
            per_pair[route, upstream] += count
    assert durations == dict(per_pair)
    for sample in metrics.matching("strangler_request_duration_seconds_bucket", le="+Inf"):
        assert sample.value == per_pair[sample.labels["route"], sample.labels["upstream"]]

    split = {(s.labels["route"], s.labels["upstream"]): s.value for s in metrics.matching("strangler_split_percent")}
    assert split == {("split", "a"): 30, ("split", "b"): 70, ("only-a", "a"): 100}

    sha = hashlib.sha256(proxy.config_path.read_bytes()).hexdigest()
    info = [(s.labels["version"], s.value) for s in metrics.matching("strangler_config_info") if s.value]
    assert info == [(sha, 1)]
    assert metrics.value("strangler_config_reloads_total", result="success") == 1
    assert metrics.value("strangler_config_reloads_total", result="failure") == 0

    # Active health checks: b is probed every 200 ms, a not at all.
    def healthy(value: float) -> bool:
        samples = scrape(proxy.admin_url).matching("strangler_upstream_healthy", upstream="b")
        return [sample.value for sample in samples] == [value]

    wait_until(lambda: healthy(1), timeout_s=5, what="b healthy in metrics")
    ready = httpx.get(proxy.admin_url + "/health/ready", timeout=5)
    assert ready.status_code == 200
    upstreams = ready.json()["upstreams"]
    assert upstreams["b"]["checked"] is True and upstreams["b"]["healthy"] is True
    assert upstreams["b"]["checked_at"] is not None
    assert upstreams["a"]["checked"] is False and upstreams["a"]["healthy"] is None

    b_app.healthy = False
    wait_until(lambda: healthy(0), timeout_s=5, what="b unhealthy in metrics")
    ready = httpx.get(proxy.admin_url + "/health/ready", timeout=5)
    assert ready.status_code == 200        # readiness is about the proxy's config, not its upstreams
    assert ready.json()["upstreams"]["b"]["healthy"] is False
    assert "503" in ready.json()["upstreams"]["b"]["detail"]
    assert scrape(proxy.admin_url).matching("strangler_upstream_healthy", upstream="a") == []

    live = httpx.get(proxy.admin_url + "/health/live", timeout=5)
    assert live.status_code == 200
    assert proxy.terminate() == 0


PLAIN_ACCESS = re.compile(
    r"access rid=(?P<rid>\S+) method=(?P<method>\S+) route=(?P<route>\S+) upstream=(?P<upstream>\S+) "
    r"status=(?P<status>\d+) attempts=(?P<attempts>\d+) ms=(?P<ms>\d+\.\d)")


def _access_lines(log: str, rid: str) -> list[str]:
    return [line for line in log.splitlines() if f"rid={rid} " in line or f'"rid": "{rid}"' in line]


def test_access_log_and_request_id(start_upstream, start_proxy) -> None:
    app = Upstream("legacy")
    upstream = start_upstream(app)
    proxy = start_proxy(catch_all(upstream.url))
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        # A catch-all route sends /metrics to the application, never to the proxy's own metrics.
        public = client.get("/metrics")
        assert public.status_code == 200 and public.text == "legacy"
        assert public.headers["x-strangler-upstream"] == "legacy"

        response = client.get("/orders/7", headers={"X-Request-ID": "client-rid-0001"})
        assert response.status_code == 200
        assert response.headers.get_list("x-request-id") == ["client-rid-0001"]
        generated = client.get("/orders/8")
        minted = generated.headers.get_list("x-request-id")
        assert len(minted) == 1 and minted[0]
        # An id the proxy will not use (too long) is replaced, not passed on beside the new one.
        replaced = client.get("/orders/9", headers={"X-Request-ID": "r" * 200})
        new_id = replaced.headers.get_list("x-request-id")
        assert len(new_id) == 1 and new_id[0] != "r" * 200
    assert app.request_ids[-3:] == [["client-rid-0001"], minted, new_id]

    for rid in ("client-rid-0001", minted[0]):
        wait_until(lambda: _access_lines(proxy.log(), rid), timeout_s=5, what=f"access line for {rid}")
    log = proxy.log()
    lines = _access_lines(log, "client-rid-0001")
    assert len(lines) == 1, lines
    found = PLAIN_ACCESS.search(lines[0])
    assert found, lines[0]
    assert (found["method"], found["route"], found["upstream"], found["status"], found["attempts"]) == \
        ("GET", "all", "legacy", "200", "1")
    assert len(_access_lines(log, minted[0])) == 1
    assert proxy.terminate() == 0


def test_access_log_as_json(start_upstream, start_proxy) -> None:
    upstream = start_upstream(Upstream("legacy"))
    proxy = start_proxy(catch_all(upstream.url, top="access_log: {format: json}"))
    rids = [f"json-rid-{number}" for number in range(3)]
    for rid in rids:
        assert httpx.get(proxy.url + "/x", headers={"X-Request-ID": rid}, timeout=5).status_code == 200
    assert httpx.get(proxy.url + "/x/missing", headers={"X-Request-ID": "json-rid-404"}, timeout=5).status_code == 404
    rids.append("json-rid-404")

    def records() -> dict[str, dict]:
        found = {}
        for line in proxy.log().splitlines():
            if '"event": "access"' in line:
                record = json.loads(line)       # the whole line is one JSON object, as log shippers want
                found[record["rid"]] = record
        return found

    wait_until(lambda: set(rids) <= set(records()), timeout_s=5, what="a JSON access line per request")
    got = records()
    for rid in rids:
        record = got[rid]
        assert record["route"] == "all" and record["upstream"] == "legacy" and record["method"] == "GET"
        assert record["status"] == (404 if rid.endswith("404") else 200)
        assert record["attempts"] == 1
        assert isinstance(record["ms"], (int, float)) and record["ms"] >= 0
    assert proxy.terminate() == 0
