"""Hostile bytes in header values answer 400 (never 500), and the admin API is not on the public port."""

from __future__ import annotations

import json

import httpx
import pytest

from strangler.config.loader import ConfigError, parse_config
from tests.hardening.conftest import Rig
from tests.hardening.wire import converse
from tests.support.faults import RecordingUpstream
from tests.support.metrics import scrape
from tests.support.servers import ProxyProcess


class Public:
    def __init__(self, proxy: ProxyProcess, upstream: RecordingUpstream) -> None:
        self.proxy, self.upstream = proxy, upstream

    def reached(self, marker: str) -> list:
        return [seen for seen in self.upstream.requests() if marker in seen.target]


@pytest.fixture(scope="module")
def public(rig: Rig) -> Public:
    upstream = rig.upstream()
    proxy = rig.proxy(f"""
version: 1
upstreams:
  a: {{url: "{upstream.url}"}}
  b: {{url: "{upstream.url}"}}
routes:
  - name: cohort
    match: {{path: /cohort}}
    split: {{a: 50, b: 50}}
  - name: by-user
    match: {{path: /user}}
    split: {{a: 50, b: 50}}
    sticky: header:X-User-Id
  - name: beta
    match: {{path: /beta, headers: {{X-Beta: "1"}}}}
    to: b
  - name: app-health
    match: {{path: /health}}
    to: a
  - name: api
    match: {{path: /api}}
    to: a
""")
    return Public(proxy, upstream)


HOSTILE_VALUES = {
    "invalid-utf8": b"\xff\xfe\x80",
    "latin1-not-utf8": b"caf\xe9",
    "lone-continuation": b"a\x80b",
    "overlong-utf8": b"\xc0\xaf",
    "utf16-surrogate": b"\xed\xa0\x80",
    "truncated-utf8": b"\xe2\x82",
}
HEADERS = {
    "custom": ("/api/{t}", b"X-Custom"),
    "user-agent": ("/api/{t}", b"User-Agent"),
    "authorization": ("/api/{t}", b"Authorization"),
    "host": ("/api/{t}", b"Host"),
    "cookie-on-cohort-route": ("/cohort/{t}", b"Cookie"),
    "sticky-header": ("/user/{t}", b"X-User-Id"),
    "matched-header": ("/beta/{t}", b"X-Beta"),
    "x-forwarded-for": ("/api/{t}", b"X-Forwarded-For"),
    "x-request-id": ("/api/{t}", b"X-Request-ID"),
    "via": ("/api/{t}", b"Via"),
}


@pytest.mark.parametrize("value", HOSTILE_VALUES.values(), ids=list(HOSTILE_VALUES))
@pytest.mark.parametrize("header", HEADERS, ids=list(HEADERS))
def test_header_values_that_are_not_utf8_get_400_never_500(public: Public, test_id: str, header: str, value: bytes):
    target, name = HEADERS[header]
    lines = [b"GET " + target.replace("{t}", test_id).encode() + b" HTTP/1.1"]
    if name != b"Host":
        lines.append(b"Host: shop.test")
    lines.append(name + b": " + (b"strangler_cohort=" + value if name == b"Cookie" else value))
    conversation = converse(public.proxy.port, b"\r\n".join(lines) + b"\r\n\r\n")
    problem = json.loads(conversation.responses[0].body)
    if header == "matched-header":
        # The value is not the route's "1", so no route takes it: 404, as for any other value.
        assert conversation.statuses == [404] and problem["reason"] == "no_route"
    else:
        assert conversation.statuses == [400], conversation.statuses
        assert problem["reason"] in ("bad_request", "bad_path")
        assert conversation.closed
    assert public.reached(test_id) == []


@pytest.mark.parametrize("raw", [
    b"GET /api/{t}/caf\xe9 HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    b"GET /api/{t}?q=caf\xe9 HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    b"GET /api/{t} HTTP/1.1\r\nHost: shop.test\r\nX-N\xe9me: v\r\n\r\n",
], ids=["path", "query", "header-name"])
def test_raw_non_ascii_in_the_target_or_a_field_name_gets_400(public: Public, test_id: str, raw: bytes):
    conversation = converse(public.proxy.port, raw.replace(b"{t}", test_id.encode()))
    assert conversation.statuses == [400]
    assert public.reached(test_id) == []


def test_utf8_header_values_pass_byte_for_byte(public: Public, test_id: str):
    value = "café ☕ 日本".encode()
    conversation = converse(public.proxy.port, b"GET /api/" + test_id.encode() + b" HTTP/1.1\r\nHost: shop.test\r\n"
                            b"X-Custom: " + value + b"\r\nConnection: close\r\n\r\n")
    assert conversation.statuses == [200]
    [seen] = public.reached(test_id)
    assert seen.values("x-custom") == [value]


def test_the_proxy_keeps_serving_after_hostile_values(public: Public, test_id: str):
    for value in HOSTILE_VALUES.values():
        converse(public.proxy.port, b"GET /api/x HTTP/1.1\r\nHost: shop.test\r\nX-Custom: " + value + b"\r\n\r\n")
    response = httpx.get(f"{public.proxy.url}/api/{test_id}", timeout=5)
    assert response.status_code == 200
    assert scrape(public.proxy.admin_url).value("strangler_requests_total", code="500") == 0


# The admin listener.

@pytest.mark.parametrize("method,path", [
    ("GET", "/metrics"), ("GET", "/routes"), ("POST", "/reload"), ("GET", "/health/ready"), ("GET", "/health/live"),
])
def test_admin_endpoints_are_not_served_on_the_public_port(public: Public, method: str, path: str):
    version = httpx.get(public.proxy.admin_url + "/routes", timeout=5).json()["version"]
    reloads = scrape(public.proxy.admin_url).value("strangler_config_reloads_total")
    response = httpx.request(method, public.proxy.url + path, timeout=5)
    if path.startswith("/health"):
        # The application's own /health (a route of this config), not the proxy's.
        assert response.status_code == 200
        assert response.headers["x-strangler-route"] == "app-health"
        assert [seen.target for seen in public.upstream.requests()][-1] == path
    else:
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["reason"] == "no_route"
    assert "strangler_requests_total" not in response.text
    # Nothing happened on the admin side: no reload, same config.
    assert httpx.get(public.proxy.admin_url + "/routes", timeout=5).json()["version"] == version
    assert scrape(public.proxy.admin_url).value("strangler_config_reloads_total") == reloads
    # While the admin listener serves them.
    admin = httpx.request(method, public.proxy.admin_url + path, timeout=5)
    assert admin.status_code == 200


def test_the_admin_port_does_not_proxy(public: Public, test_id: str):
    response = httpx.get(f"{public.proxy.admin_url}/api/{test_id}", timeout=5)
    assert response.status_code == 404
    assert public.reached(test_id) == []


@pytest.mark.parametrize("listen,admin", [
    ("{host: 127.0.0.1, port: 8000}", "{host: 127.0.0.1, port: 8000}"),
    ("{host: 0.0.0.0, port: 8000}", "{host: 127.0.0.1, port: 8000}"),
])
def test_a_config_putting_admin_on_the_public_listener_is_rejected(listen: str, admin: str):
    with pytest.raises(ConfigError, match="admin"):
        parse_config(f"""
version: 1
listen: {listen}
admin: {admin}
upstreams: {{a: {{url: "http://127.0.0.1:9"}}}}
routes: [{{name: r, match: {{path: /}}, to: a}}]
""")
