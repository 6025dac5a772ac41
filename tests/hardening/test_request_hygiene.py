"""Request hygiene, byte for byte: what an origin behind strangler receives for hostile requests.

Found by sending the same raw bytes to strangler and to nginx in front of a recording
origin. Each test sends raw bytes to `strangler run` and asserts on exactly what the
recording upstreams received (or that they received nothing).
"""

from __future__ import annotations

import json

import pytest

from tests.hardening.conftest import Rig
from tests.hardening.wire import converse
from tests.support.faults import Received, RecordingUpstream
from tests.support.servers import ProxyProcess


class Site:
    def __init__(self, proxy: ProxyProcess, upstreams: dict[str, RecordingUpstream]) -> None:
        self.proxy, self.upstreams = proxy, upstreams

    @property
    def port(self) -> int:
        return self.proxy.port

    def reached(self, marker: str) -> list[tuple[str, Received]]:
        """(upstream name, request) for every request whose target or a header value carries `marker`."""
        return [(name, seen) for name, upstream in self.upstreams.items() for seen in upstream.requests()
                if marker in seen.target or any(marker.encode() in value for _, value in seen.headers)]

    def one(self, marker: str) -> tuple[str, Received]:
        reached = self.reached(marker)
        assert len(reached) == 1, reached
        return reached[0]


@pytest.fixture(scope="module")
def site(rig: Rig) -> Site:
    upstreams = {name: rig.upstream() for name in ("beta", "shop", "orders", "legacy")}
    proxy = rig.proxy(f"""
version: 1
upstreams:
{"".join(f'  {name}: {{url: "{u.url}", timeout: 5s}}{chr(10)}' for name, u in upstreams.items())}
limits: {{header_timeout: 2s, body_idle_timeout: 2s}}
routes:
  - name: beta
    match: {{path: /beta, host: beta.example.com}}
    to: beta
  - name: shop
    match: {{path: /shop, host: shop.example.com}}
    to: shop
  - name: orders
    match: {{path: /api/orders}}
    to: orders
  - name: legacy
    match: {{path: /}}
    to: legacy
""")
    return Site(proxy, upstreams)


def _request(method: str, target: str, *lines: str, body: bytes = b"") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n").encode(
        "latin-1") + body


def _only(seen: Received, name: str) -> bytes:
    values = seen.values(name)
    assert len(values) == 1, (name, values)
    return values[0]


def _problem(conversation, status: int) -> dict:
    response = conversation.responses[0]
    assert response.status == status
    assert response.header("content-type") == "application/problem+json"
    return json.loads(response.body)


# --- Connection tokens cannot remove what the proxy sets (D3) ---------------------------------------

@pytest.mark.parametrize("connection", [
    "Host",
    "close, host",
    "Host, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Forwarded, Via, X-Request-ID, Content-Length",
], ids=["host", "close-and-host", "every-proxy-header"])
def test_a_connection_token_naming_host_or_a_proxy_header_removes_none_of_them(site: Site, test_id: str,
                                                                               connection: str):
    data = _request("POST", f"/beta/{test_id}", "Host: beta.example.com", f"X-Test-Id: {test_id}",
                    f"Connection: {connection}", "Content-Length: 5", body=b"hello")
    conversation = converse(site.port, data)
    assert conversation.statuses == [200]
    assert conversation.responses[0].header("x-strangler-route") == "beta"
    name, seen = site.one(test_id)
    assert name == "beta"
    assert _only(seen, "host") == b"beta.example.com"
    assert _only(seen, "x-forwarded-host") == b"beta.example.com"
    assert _only(seen, "x-forwarded-for") == b"127.0.0.1"
    assert _only(seen, "x-forwarded-proto") == b"http"
    assert _only(seen, "via") == b"1.1 strangler"
    assert len(_only(seen, "x-request-id")) > 0
    assert _only(seen, "content-length") == b"5" and seen.body == b"hello"
    assert not seen.values("connection")


# --- CONNECT and TRACE are refused before routing (D4) ---------------------------------------------

def test_connect_with_a_path_target_gets_405_reaches_no_upstream_and_ends_the_connection(site: Site, test_id: str):
    # llhttp treats CONNECT as a protocol switch and reads nothing after its head: the connection ends.
    data = _request("CONNECT", f"/api/orders/{test_id}", "Host: shop.test", f"X-Test-Id: {test_id}")
    behind = _request("GET", f"/api/orders/{test_id}-behind", "Host: shop.test", f"X-Test-Id: {test_id}-behind")
    conversation = converse(site.port, data + behind)
    assert conversation.statuses == [405], conversation.statuses
    assert _problem(conversation, 405)["reason"] == "method_not_allowed"
    assert conversation.closed
    assert site.reached(test_id) == []


def test_connect_with_an_authority_target_is_refused_and_reaches_no_upstream(site: Site, test_id: str):
    # Refused by the listener while parsing the request line, before the app, like CONNECT /path.
    data = _request("CONNECT", f"{test_id}.example.com:443", f"Host: {test_id}.example.com:443")
    conversation = converse(site.port, data)
    assert conversation.statuses == [405], conversation.statuses
    assert conversation.responses[0].header("content-type") == "application/problem+json"
    assert "CONNECT" not in conversation.responses[0].header("allow")
    assert conversation.closed
    assert site.reached(test_id) == []


def test_connect_refused_leaves_no_upstream_connection_for_the_next_client(site: Site, test_id: str):
    # Once a CONNECT reached an upstream, the 200 answer turned its connection into a tunnel that the
    # pool then handed to the next request.
    first = converse(site.port, _request("CONNECT", f"/api/orders/{test_id}", "Host: shop.test"))
    assert first.statuses == [405]
    second = converse(site.port, _request("GET", f"/api/orders/{test_id}-next", "Host: shop.test",
                                          f"X-Test-Id: {test_id}-next", "Connection: close"))
    assert second.statuses == [200]
    assert second.responses[0].header("x-echo-id") == f"{test_id}-next"
    assert [seen.method for _, seen in site.reached(test_id)] == ["GET"]


def test_trace_gets_405_reaches_no_upstream_and_the_connection_stays_usable(site: Site, test_id: str):
    data = _request("TRACE", f"/api/orders/{test_id}", "Host: shop.test", f"X-Test-Id: {test_id}",
                    "Cookie: session=secret")
    behind = _request("GET", f"/api/orders/{test_id}-behind", "Host: shop.test", f"X-Test-Id: {test_id}-behind")
    conversation = converse(site.port, data + behind, expect=2)
    assert conversation.statuses == [405, 200], conversation.statuses
    assert _problem(conversation, 405)["reason"] == "method_not_allowed"
    assert conversation.responses[1].header("x-echo-id") == f"{test_id}-behind"
    assert [name for name, _ in site.reached(test_id)] == ["orders"]      # only the GET behind it


# --- Host must be a host (D5) ----------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    "a/evil", "a b", "a@evil.test", "a\\evil", "shop.example.com,evil.test", "a?b", "a#b",
    "[::1", "[not-ipv6]", "shop.example.com:80:80", "shop.example.com:8o", "",
], ids=["slash", "space", "userinfo", "backslash", "comma", "query", "fragment",
        "open-bracket", "bad-ipv6", "two-ports", "bad-port", "empty"])
def test_an_invalid_host_gets_400_and_reaches_no_upstream(site: Site, test_id: str, host: str):
    data = _request("GET", f"/api/orders/{test_id}", f"Host: {host}", f"X-Test-Id: {test_id}")
    conversation = converse(site.port, data)
    assert conversation.statuses == [400], conversation.statuses
    assert _problem(conversation, 400)["reason"] == "bad_request"
    assert site.reached(test_id) == []


@pytest.mark.parametrize("host", [
    "shop.test", "Shop.Test:8080", "127.0.0.1", "127.0.0.1:8000", "[::1]", "[::1]:8000", "xn--bcher-kva.test",
    "under_score.test",
])
def test_a_valid_host_reaches_the_upstream_as_sent(site: Site, test_id: str, host: str):
    data = _request("GET", f"/api/orders/{test_id}", f"Host: {host}", f"X-Test-Id: {test_id}")
    assert converse(site.port, data).statuses == [200]
    _, seen = site.one(test_id)
    assert _only(seen, "host") == host.encode()
    assert _only(seen, "x-forwarded-host") == host.encode()


# --- Spoofable forwarding header spellings (D7) ----------------------------------------------------

def test_underscore_spellings_of_proxy_headers_and_proxy_are_dropped(site: Site, test_id: str):
    # WSGI/CGI servers map X_Forwarded_For and X-Forwarded-For both to HTTP_X_FORWARDED_FOR.
    data = _request("GET", f"/api/orders/{test_id}", "Host: shop.test", f"X-Test-Id: {test_id}",
                    "X_Forwarded_For: 6.6.6.6", "X-Forwarded_Proto: https", "x_forwarded_host: evil.test",
                    "X_Forwarded_Port: 1", "X-Forwarded-Prefix: /evil", "X_Request_Id: spoofed",
                    "Content_Length: 99", "Transfer_Encoding: chunked", "X_Strangler_Route: spoofed",
                    "Proxy: http://evil.test:3128", "X_Custom_Header: kept", "X-Other: kept")
    assert converse(site.port, data).statuses == [200]
    _, seen = site.one(test_id)
    names = [name.lower() for name, _ in seen.headers]
    assert [name for name in names if b"_" in name] == [b"x_custom_header"], names
    assert b"proxy" not in names
    assert _only(seen, "x-forwarded-for") == b"127.0.0.1"
    assert _only(seen, "x-forwarded-proto") == b"http"
    assert _only(seen, "x-forwarded-host") == b"shop.test"
    assert _only(seen, "x-other") == b"kept"
    assert not any(b"6.6.6.6" in value or b"evil" in value or b"spoofed" in value for _, value in seen.headers)


# --- Path parameters on dot segments ---------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/api/orders/..;/admin/{t}",
    "/api/orders/..;x=1/admin/{t}",
    "/api/orders/%2e%2e;/admin/{t}",
    "/api/orders/%2E%2E%3B/admin/{t}",
    "/api/orders/.%2e;x/admin/{t}",
    "/api/orders/.;/{t}",
    "/api/orders/;x/../admin/{t}",
    "/..;/api/orders/{t}",
], ids=["dotdot-semicolon", "dotdot-params", "encoded-dotdot", "encoded-semicolon", "mixed", "dot-semicolon",
        "params-only-segment-then-dotdot", "at-root"])
def test_a_dot_segment_with_path_parameters_gets_400_and_reaches_no_upstream(site: Site, test_id: str, path: str):
    # Tomcat and Spring read `..;x` as `..`: forwarded as it is, /api/orders/..;/admin is /api/admin there.
    data = _request("GET", path.replace("{t}", test_id), "Host: shop.test", f"X-Test-Id: {test_id}")
    conversation = converse(site.port, data)
    assert conversation.statuses == [400], conversation.statuses
    assert _problem(conversation, 400)["reason"] == "bad_path"
    assert site.reached(test_id) == []


def test_path_parameters_on_an_ordinary_segment_pass_unchanged(site: Site, test_id: str):
    target = f"/api/orders/{test_id};jsessionid=abc/items;v=2"
    assert converse(site.port, _request("GET", target, "Host: shop.test")).statuses == [200]
    name, seen = site.one(test_id)
    assert (name, seen.target) == ("orders", target)


# --- A Host with a trailing dot is the same host ---------------------------------------------------

@pytest.mark.parametrize("host", ["shop.example.com.", "shop.example.com.:8000", "SHOP.Example.COM."])
def test_a_host_with_a_trailing_dot_matches_the_host_route(site: Site, test_id: str, host: str):
    data = _request("GET", f"/shop/{test_id}", f"Host: {host}", f"X-Test-Id: {test_id}")
    conversation = converse(site.port, data)
    assert conversation.statuses == [200]
    assert conversation.responses[0].header("x-strangler-route") == "shop"
    name, seen = site.one(test_id)
    assert name == "shop"
    assert _only(seen, "host") == host.encode()          # kept as the client sent it
