"""Route matching: file order, first match wins; path prefix, methods, exact headers, host."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from strangler.config.model import Match, Route
from strangler.errors import ProxyError
from strangler.explain import explain_request
from strangler.routing import RequestHead, RoutingTable, check_method, route_matches


def _route(name: str, path: str = "/", *, methods: set[str] | None = None,
           headers: dict[str, str] | None = None, host: str | None = None) -> Route:
    return Route(
        name=name,
        match=Match(path=path, methods=frozenset(methods) if methods is not None else None,
                    headers=tuple((k.lower(), v) for k, v in (headers or {}).items()), host=host),
        split=(("legacy", 100.0),),
    )


def _head(method: str = "GET", path: str = "/", headers: dict[str, str] | list[tuple[str, str]] | None = None) -> RequestHead:
    pairs = headers.items() if isinstance(headers, dict) else (headers or [])
    return RequestHead(method, path, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs])


def _matched(table: RoutingTable, head: RequestHead) -> str | None:
    route = table.match(head)
    return None if route is None else route.name


def test_first_matching_route_in_file_order_wins() -> None:
    table = RoutingTable([_route("broad", "/api"), _route("narrow", "/api/orders"), _route("all", "/")])
    # "narrow" is more specific, but "broad" comes first in the file.
    assert _matched(table, _head(path="/api/orders/7")) == "broad"
    table = RoutingTable([_route("narrow", "/api/orders"), _route("broad", "/api"), _route("all", "/")])
    assert _matched(table, _head(path="/api/orders/7")) == "narrow"
    assert _matched(table, _head(path="/api/users")) == "broad"
    assert _matched(table, _head(path="/home")) == "all"


def test_no_route_matches_returns_none() -> None:
    table = RoutingTable([_route("orders", "/api/orders")])
    assert table.match(_head(path="/api/ordersx")) is None
    assert table.match(_head(path="/")) is None


def test_path_prefix_matches_on_segment_boundary() -> None:
    table = RoutingTable([_route("orders", "/api/orders"), _route("all", "/")])
    assert _matched(table, _head(path="/api/orders")) == "orders"
    assert _matched(table, _head(path="/api/orders/7")) == "orders"
    assert _matched(table, _head(path="/api/ordersx")) == "all"


def test_methods_restrict_a_route_and_others_fall_through() -> None:
    table = RoutingTable([_route("reads", "/api", methods={"GET", "HEAD"}), _route("all", "/")])
    assert _matched(table, _head("GET", "/api/x")) == "reads"
    assert _matched(table, _head("HEAD", "/api/x")) == "reads"
    assert _matched(table, _head("POST", "/api/x")) == "all"
    assert _matched(table, _head("DELETE", "/api/x")) == "all"


def test_route_without_methods_matches_any_method() -> None:
    route = _route("any", "/")
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"):
        assert route_matches(route, _head(method, "/x"))


def test_header_match_is_exact_with_case_insensitive_names() -> None:
    route = _route("beta", "/", headers={"X-Beta": "1"})
    assert route_matches(route, _head(headers={"X-Beta": "1"}))
    assert route_matches(route, _head(headers={"x-beta": "1"}))
    assert route_matches(route, _head(headers={"X-BETA": "1"}))
    assert not route_matches(route, _head(headers={"X-Beta": "10"}))
    assert not route_matches(route, _head(headers={"X-Beta": "true"}))
    assert not route_matches(route, _head(headers={"X-Beta": ""}))
    assert not route_matches(route, _head(headers={"X-Beta-Other": "1"}))
    assert not route_matches(route, _head())


def test_header_values_are_case_sensitive() -> None:
    route = _route("tenant", "/", headers={"X-Tenant": "Acme"})
    assert route_matches(route, _head(headers={"X-Tenant": "Acme"}))
    assert not route_matches(route, _head(headers={"X-Tenant": "acme"}))


def test_all_listed_headers_must_match() -> None:
    route = _route("both", "/", headers={"X-Beta": "1", "X-Region": "eu"})
    assert route_matches(route, _head(headers={"x-region": "eu", "X-Beta": "1"}))
    assert not route_matches(route, _head(headers={"X-Beta": "1"}))
    assert not route_matches(route, _head(headers={"X-Beta": "1", "X-Region": "us"}))


def test_header_mismatch_falls_through_to_the_next_route() -> None:
    table = RoutingTable([_route("beta", "/api", headers={"X-Beta": "1"}), _route("all", "/")])
    assert _matched(table, _head(path="/api/x", headers={"X-Beta": "1"})) == "beta"
    assert _matched(table, _head(path="/api/x", headers={"X-Beta": "0"})) == "all"


def test_host_match_strips_the_port_and_ignores_case() -> None:
    route = _route("shop", "/", host="shop.example.com")
    assert route_matches(route, _head(headers={"Host": "shop.example.com"}))
    assert route_matches(route, _head(headers={"Host": "shop.example.com:8443"}))
    assert route_matches(route, _head(headers={"Host": "Shop.Example.COM"}))
    assert route_matches(route, _head(headers={"host": "SHOP.example.com:80"}))
    assert not route_matches(route, _head(headers={"Host": "admin.example.com"}))
    assert not route_matches(route, _head(headers={"Host": "shop.example.com.evil.test"}))
    assert not route_matches(route, _head(headers={"Host": "evil-shop.example.com"}))
    assert not route_matches(route, _head())


@pytest.mark.parametrize("host", [
    "shop.example.com.", "shop.example.com.:8000", "SHOP.Example.COM.", "Shop.Example.Com.:443",
])
def test_host_match_takes_a_fully_qualified_name_with_its_trailing_dot(host: str) -> None:
    route = _route("shop", "/", host="shop.example.com")
    head = _head(headers={"Host": host})
    assert head.host == "shop.example.com"
    assert route_matches(route, head)
    assert not route_matches(route, _head(headers={"Host": "shop.example.com.evil.test."}))


def test_a_route_host_written_with_a_trailing_dot_matches_with_or_without_it() -> None:
    route = _route("shop", "/", host="shop.example.com.")
    assert route_matches(route, _head(headers={"Host": "shop.example.com"}))
    assert route_matches(route, _head(headers={"Host": "Shop.Example.com.:8000"}))
    assert not route_matches(route, _head(headers={"Host": "shop.example"}))
    assert not route_matches(route, _head())


def test_explain_agrees_on_a_host_with_a_trailing_dot(tmp_path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("""\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  shop: {url: "http://127.0.0.1:8101"}
routes:
  - name: shop
    match: {path: /, host: shop.example.com}
    to: shop
  - name: rest
    match: {path: /}
    to: legacy
""")
    for url, headers in (("http://shop.example.com./x", []), ("/x", ["Host: Shop.Example.com.:8000"])):
        out = io.StringIO()
        assert explain_request(str(config), "GET", url, headers, out=out) == 0
        assert "route: shop (routes[0]" in out.getvalue(), out.getvalue()


def _one_route_config(tmp_path) -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text("""\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
routes:
  - name: rest
    match: {path: /}
    to: legacy
""")
    return config


@pytest.mark.parametrize("method", ["CONNECT", "TRACE"])
def test_connect_and_trace_are_refused_with_405_whatever_the_routes_allow(method: str, tmp_path) -> None:
    with pytest.raises(ProxyError) as refused:
        check_method(method)
    assert refused.value.status == 405 and refused.value.reason.flag == "method_not_allowed"
    config = _one_route_config(tmp_path)
    out = io.StringIO()
    assert explain_request(str(config), method, "/x", ["Host: shop.test"], out=out) == 1
    assert "405 Method Not Allowed" in out.getvalue()


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
def test_other_methods_are_left_to_the_routes(method: str) -> None:
    check_method(method)


def test_explain_refuses_an_invalid_host_as_the_proxy_does(tmp_path) -> None:
    config = _one_route_config(tmp_path)
    out = io.StringIO()
    assert explain_request(str(config), "GET", "/x", ["Host: a/evil"], out=out) == 1
    assert "400 Bad Request" in out.getvalue()


def test_host_match_with_ipv6_literal() -> None:
    route = _route("v6", "/", host="[::1]")
    assert route_matches(route, _head(headers={"Host": "[::1]:8000"}))
    assert route_matches(route, _head(headers={"Host": "[::1]"}))
    assert not route_matches(route, _head(headers={"Host": "[::2]:8000"}))


def test_all_conditions_must_hold_together() -> None:
    route = _route("orders", "/api/orders", methods={"POST"}, headers={"X-Beta": "1"}, host="shop.example.com")
    good = {"Host": "shop.example.com", "X-Beta": "1"}
    assert route_matches(route, _head("POST", "/api/orders/1", good))
    assert not route_matches(route, _head("GET", "/api/orders/1", good))
    assert not route_matches(route, _head("POST", "/api/users", good))
    assert not route_matches(route, _head("POST", "/api/orders/1", {**good, "Host": "other.example.com"}))
    assert not route_matches(route, _head("POST", "/api/orders/1", {**good, "X-Beta": "2"}))
