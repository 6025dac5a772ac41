"""`strangler explain`: the route, the upstream and the reasons, as the running proxy would decide."""

from __future__ import annotations

import io
import re

import pytest

from strangler.cli import main
from strangler.explain import explain_request
from strangler.split import SplitTable, bucket_of

CONFIG = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  orders: {url: "http://127.0.0.1:8101"}
routes:
  - name: beta
    match: {path: /api/orders, headers: {X-Beta: "1"}}
    to: orders
  - name: orders-read
    match: {path: /api/orders, methods: [GET]}
    split: {orders: 30, legacy: 70}
    fallback: legacy
  - name: by-user
    match: {path: /api/users, host: shop.test}
    split: {orders: 50, legacy: 50}
    sticky: header:X-User-Id
    strip_prefix: true
  - name: rest
    match: {path: /}
    to: legacy
"""
COHORT = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG)
    return str(path)


def explain(config_path: str, method: str, url: str, *headers: str) -> tuple[int, str]:
    out = io.StringIO()
    code = explain_request(config_path, method, url, list(headers), out=out)
    return code, out.getvalue()


def test_a_sticky_cohort_names_its_bucket_and_the_upstream_the_proxy_would_choose(config_path):
    code, text = explain(config_path, "GET", "/api/orders/7", f"Cookie: a=1; strangler_cohort={COHORT}")
    assert code == 0
    assert "routes[0] beta: no (header x-beta is None, not '1')" in text
    assert "route: orders-read (routes[1]" in text
    bucket = bucket_of("orders-read", COHORT)
    chosen = SplitTable("orders-read", (("orders", 30), ("legacy", 70))).choose(COHORT).upstream
    assert f"cookie strangler_cohort) -> bucket {bucket} -> {chosen}" in text
    assert "split: orders 30% (buckets 0-2999), legacy 70% (buckets 3000-9999) of 10000" in text
    assert "fallback: legacy" in text


@pytest.mark.parametrize(("headers", "why"), [
    ((), "no key in this request"),
    (("Cookie: strangler_cohort=abc",), "cookie strangler_cohort='abc' is not a cohort id"),
], ids=["no-cookie", "not-a-cohort-id"])
def test_without_a_usable_cohort_the_request_is_placed_at_random_and_a_cohort_would_be_issued(config_path, headers,
                                                                                               why):
    _, text = explain(config_path, "GET", "/api/orders/7", *headers)
    assert why in text and "-> placed by weight at random" in text
    assert "a new strangler_cohort cookie would be issued" in text


def test_header_stickiness_host_matching_and_strip_prefix(config_path):
    _, text = explain(config_path, "GET", "http://shop.test/api/users/42/orders", "X-User-Id: 42")
    assert "route: by-user" in text and "host shop.test" in text
    assert "forwarded path: /42/orders" in text
    assert re.search(r"sticky: header:X-User-Id = '42' \(header X-User-Id\) -> bucket \d+ -> (orders|legacy)", text)
    _, text = explain(config_path, "GET", "http://other.test/api/users/42", "X-User-Id: 42")
    assert "routes[2] by-user: no (host 'other.test' is not 'shop.test')" in text
    assert "route: rest" in text


def test_the_path_is_normalized_before_matching_as_the_proxy_does(config_path):
    _, text = explain(config_path, "GET", "/api/orders/../admin")
    assert "request: GET /api/admin  (normalized from /api/orders/../admin)" in text
    assert "route: rest" in text


def test_a_path_that_cannot_be_normalized_is_a_400(config_path):
    code, text = explain(config_path, "GET", "/api/orders%2f..%2fadmin")
    assert code == 1 and "400 Bad Request" in text


def test_a_method_outside_every_route_falls_through(config_path):
    code, text = explain(config_path, "POST", "/api/orders/")
    assert code == 0
    assert "routes[1] orders-read: no (method POST not in GET)" in text
    assert "route: rest" in text and "upstream: legacy (the only one with a share)" in text


def test_the_command_line_reports_a_bad_header_and_an_invalid_config(config_path, tmp_path, capsys):
    assert main(["explain", config_path, "GET", "/", "-H", "no-colon"]) == 2
    assert "is not 'Name: value'" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(CONFIG.replace("to: legacy\n", "to: nowhere\n"))
    assert main(["explain", str(broken), "GET", "/"]) == 1
    assert "broken.yaml:" in capsys.readouterr().err


def test_client_ip_stickiness_uses_the_given_address_resolved_through_trusted_proxies(tmp_path):
    path = tmp_path / "by-ip.yaml"
    path.write_text("""\
version: 1
trusted_proxies: [10.0.0.0/8]
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  orders: {url: "http://127.0.0.1:8101"}
routes:
  - name: r
    match: {path: /}
    split: {orders: 50, legacy: 50}
    sticky: client-ip
""")
    out = io.StringIO()
    explain_request(str(path), "GET", "/", [], out=out)
    assert "no client address given (--client-ip IP) -> placed by weight at random" in out.getvalue()
    direct, proxied = io.StringIO(), io.StringIO()
    explain_request(str(path), "GET", "/", [], out=direct, client_ip="192.0.2.7")
    explain_request(str(path), "GET", "/", ["X-Forwarded-For: 192.0.2.7"], out=proxied, client_ip="10.1.2.3")
    bucket = bucket_of("r", "192.0.2.7")
    assert f"sticky: client-ip = '192.0.2.7' (client address) -> bucket {bucket}" in direct.getvalue()
    assert ("(client address, from X-Forwarded-For through trusted proxy 10.1.2.3) -> "
            f"bucket {bucket}") in proxied.getvalue()
    assert main(["explain", str(path), "GET", "/", "--client-ip", "192.0.2.7"]) == 0


def test_a_template_route_shows_its_captures_and_each_parts_target(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG.replace("routes:\n", """routes:
  - name: summary
    match: {path: "/api/summary/{id}"}
    timeout: 800ms
    compose:
      order: {upstream: orders, path: "/api/orders/{id}/", required: true}
      payment: {upstream: legacy, path: "/api/payments/?order_id={id}"}
""", 1))
    code, text = explain(str(path), "GET", "/api/summary/a%3Bb")
    assert code == 0
    assert "path fits /api/summary/{id}" in text
    assert "captures: id='a;b'" in text
    assert "composite: 2 parts fetched at once with GET, answered as one JSON object within 0.8s" in text
    assert "part order: orders GET /api/orders/a%3Bb/ (required: its failure fails the whole)" in text
    assert "part payment: legacy GET /api/payments/?order_id=a%3Bb (optional: null when it fails)" in text
    _, text = explain(str(path), "GET", "/api/summary/7/lines")
    assert "routes[0] summary: no (path does not fit /api/summary/{id})" in text
