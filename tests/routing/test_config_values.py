"""The config loader's value types: durations, sizes, percents, urls, paths, policies."""

from __future__ import annotations

import ipaddress

import pytest

from strangler.config.loader import ConfigError, parse_config
from strangler.config.model import AccessLog, Limits, Sticky

HEAD = """\
version: 1
upstreams:
  legacy: {url: http://127.0.0.1:8001}
  orders: {url: http://127.0.0.1:8101}
"""
ROUTE = "routes:\n  - {name: a, match: {path: /}, to: legacy}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml")
    return [str(problem) for problem in info.value.problems]


def route_with(extra: str):
    """The one route of a config whose route mapping also holds `extra`."""
    return parse_config(HEAD + f"routes:\n  - {{name: a, match: {{path: /}}, to: legacy, {extra}}}\n").routes[0]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), ("1h", 3600.0), ("3", 3.0), ("0.5", 0.5)],
)
def test_durations_are_seconds_or_a_number_with_a_unit(written, seconds):
    assert route_with(f"timeout: {written}").timeout_s == seconds


@pytest.mark.parametrize(
    ("written", "found"),
    [("fast", "expected a duration such as 250ms, 2s or 1m, found 'fast'"),
     ("0", "expected a duration greater than 0, found 0"),
     ("0ms", "expected a duration greater than 0, found 0ms"),
     ("true", "expected a duration such as 250ms, 2s or 1m, found the boolean true")],
)
def test_bad_durations_say_what_was_expected(written, found):
    assert problems(HEAD + f"routes:\n  - {{name: a, match: {{path: /}}, to: legacy, timeout: {written}}}\n") == [
        f"routes.yaml:6:54: routes[0].timeout: {found}"]


@pytest.mark.parametrize(
    ("written", "size"),
    [("1024", 1024), ("64KiB", 65536), ("10MiB", 10 * 1024**2), ("1GiB", 1024**3), ("100kB", 100_000), ("1MB", 10**6)],
)
def test_sizes_are_bytes_or_a_number_with_a_unit(written, size):
    assert route_with(f"max_body_size: {written}").max_body_bytes == size


def test_bad_size_says_what_was_expected():
    assert problems(HEAD + "limits: {max_body_size: 10 megs}\n" + ROUTE) == [
        "routes.yaml:5:25: limits.max_body_size: expected a size such as 65536, 64KiB or 10MiB, found '10 megs'"]


@pytest.mark.parametrize(("written", "ratio"), [("20%", 0.2), ("20", 0.2), ("12.5", 0.125), ("0%", 0.0), ("100", 1.0)])
def test_retry_budget_is_a_percent_stored_as_a_ratio(written, ratio):
    config = parse_config(HEAD + f"defaults: {{retry: {{budget: {written}}}}}\n" + ROUTE)
    assert config.routes[0].retry.budget_ratio == ratio


def test_budget_over_100_percent_is_a_problem():
    assert problems(HEAD + "defaults: {retry: {budget: 150%}}\n" + ROUTE) == [
        "routes.yaml:5:28: defaults.retry.budget: expected a percent from 0 to 100, found 150%"]


@pytest.mark.parametrize(
    ("url", "stored"),
    [("http://127.0.0.1:8001", "http://127.0.0.1:8001"), ("http://Orders.internal", "http://orders.internal:80"),
     ("https://orders.internal/", "https://orders.internal:443"), ("http://[::1]:81", "http://[::1]:81")],
)
def test_upstream_url_is_stored_as_an_origin_with_an_explicit_port(url, stored):
    config = parse_config(f"version: 1\nupstreams:\n  legacy: {{url: '{url}'}}\n" + ROUTE)
    assert config.upstream("legacy").url == stored


@pytest.mark.parametrize(
    ("url", "message"),
    [("ftp://x", "url must start with http:// or https://, found 'ftp://x'"),
     ("127.0.0.1:8001", "url must start with http:// or https://, found '127.0.0.1:8001'"),
     ("http://u:p@x", "url must not contain a user name or password"),
     ("http://x/api", "url must not have a path ('/api'): write only scheme://host:port"),
     ("http://x?a=1", "url must not have a query or fragment"),
     ("http://", "url has no host: 'http://'"),
     ("http://x:99999", "invalid url 'http://x:99999': Port out of range 0-65535")],
)
def test_bad_upstream_url_says_what_is_wrong(url, message):
    assert problems(f"version: 1\nupstreams:\n  legacy: {{url: '{url}'}}\n" + ROUTE) == [
        f"routes.yaml:3:17: upstreams.legacy.url: {message}"]


def test_upstream_settings_and_health_check():
    config = parse_config(HEAD.replace("{url: http://127.0.0.1:8101}", (
        "{url: http://127.0.0.1:8101, connect_timeout: 250ms, timeout: 1m, max_concurrent: 8, "
        "health: {path: /ready, interval: 2s, timeout: 500ms}}")) + ROUTE)
    orders = config.upstream("orders")
    assert (orders.connect_timeout_s, orders.timeout_s, orders.max_concurrent) == (0.25, 60.0, 8)
    assert orders.health is not None and (orders.health.path, orders.health.interval_s, orders.health.timeout_s) == (
        "/ready", 2.0, 0.5)
    assert problems("version: 1\nupstreams:\n  legacy: {url: http://x, health: {path: ready}}\n" + ROUTE) == [
        "routes.yaml:3:42: upstreams.legacy.health.path: path must start with '/', found 'ready'"]


def test_upstream_without_url_is_a_problem():
    assert problems("version: 1\nupstreams:\n  legacy: {max_concurrent: 3}\n" + ROUTE) == [
        "routes.yaml:3:11: upstreams.legacy: missing required key 'url'"]


@pytest.mark.parametrize(
    ("path", "message"),
    [("api", "path must start with '/', found 'api'"),
     ("/a?b", "path must not contain '?', found '/a?b'"),
     ("/a#b", "path must not contain '#', found '/a#b'"),
     ("/a//b", "path must not contain '//', found '/a//b'"),
     ("/a/../b", "path must not contain '.' or '..' segments, found '/a/../b'"),
     ("/a/./b", "path must not contain '.' or '..' segments, found '/a/./b'"),
     ("/a/%2e%2e/b", "path must not contain '.' or '..' segments, found '/a/%2e%2e/b'"),
     ("/a%2Fb", "path must not contain an encoded slash or backslash (%2F), found '/a%2Fb'"),
     ("/a%2fb", "path must not contain an encoded slash or backslash (%2f), found '/a%2fb'"),
     ("/a%5Cb", "path must not contain an encoded slash or backslash (%5C), found '/a%5Cb'"),
     ("/a\\b", "path must not contain a backslash, found '/a\\b'")],
)
def test_bad_match_paths_are_refused(path, message):
    quoted = path.replace("\\", "\\\\")
    assert problems(HEAD + f'routes:\n  - {{name: a, match: {{path: "{quoted}"}}, to: legacy}}\n') == [
        f"routes.yaml:6:29: routes[0].match.path: {message}"]


@pytest.mark.parametrize(
    ("path", "stored"),
    [("/", "/"), ("/api/", "/api"), ("/api/orders", "/api/orders"), ("/%7Euser", "/~user"), ("/caf%c3%a9", "/caf%C3%A9")],
)
def test_match_path_is_stored_as_requests_are_normalized(path, stored):
    config = parse_config(HEAD + f"routes:\n  - {{name: a, match: {{path: '{path}'}}, to: legacy}}\n")
    assert config.routes[0].match.path == stored


def test_match_host_is_lower_case_without_a_port():
    assert parse_config(HEAD + "routes:\n  - {name: a, match: {path: /, host: Shop.Example.COM}, to: legacy}\n"
                        ).routes[0].match.host == "shop.example.com"
    assert problems(HEAD + "routes:\n  - {name: a, match: {path: /, host: 'shop:8080'}, to: legacy}\n") == [
        "routes.yaml:6:38: routes[0].match.host: host must not include a port, found 'shop:8080'"]


def test_match_methods_are_upper_cased_and_not_empty():
    assert parse_config(HEAD + "routes:\n  - {name: a, match: {path: /, methods: [get, Post]}, to: legacy}\n"
                        ).routes[0].match.methods == frozenset({"GET", "POST"})
    assert problems(HEAD + "routes:\n  - {name: a, match: {path: /, methods: []}, to: legacy}\n") == [
        "routes.yaml:6:41: routes[0].match.methods: methods is empty, so the route never matches; "
        "leave it out to match any method"]


@pytest.mark.parametrize("word", ["yes", "no", "on", "off"])
def test_boolean_fields_take_only_true_or_false(word):
    assert route_with("strip_prefix: true").strip_prefix is True
    assert problems(HEAD + f"expose_headers: {word}\n" + ROUTE) == [
        f"routes.yaml:5:17: expose_headers: '{word}' is a boolean only in YAML 1.1; write true or false"]


@pytest.mark.parametrize(
    ("written", "sticky"),
    [("cohort", Sticky()), ("none", Sticky(kind="none")), ("client-ip", Sticky(kind="client-ip")),
     ("cookie:uid", Sticky(kind="cookie", name="uid")), ("header:X-User-Id", Sticky(kind="header", name="X-User-Id"))],
)
def test_sticky_rules(written, sticky):
    assert route_with(f"sticky: {written}").sticky == sticky


def test_bad_sticky_rule_lists_the_choices():
    assert problems(HEAD + "defaults: {sticky: 'cookie:'}\n" + ROUTE) == [
        "routes.yaml:5:20: defaults.sticky: expected cohort, none, client-ip, cookie:NAME or header:NAME, "
        "found 'cookie:'"]


def test_route_retry_and_breaker_merge_key_by_key_over_the_defaults():
    config = parse_config(HEAD + """\
defaults:
  retry: {attempts: 4, backoff: {initial: 100ms, max: 2s}, retry_on: [connect-error, "503"], methods: [get]}
  circuit_breaker: {failure_threshold: 7, recovery_timeout: 1m}
routes:
  - {name: a, match: {path: /}, to: legacy, retry: {backoff: {max: 5s}}, circuit_breaker: {success_threshold: 3}}
""")
    retry, breaker = config.routes[0].retry, config.routes[0].breaker
    assert (retry.attempts, retry.backoff_initial_s, retry.backoff_max_s) == (4, 0.1, 5.0)
    assert (retry.retry_on_connect_error, retry.retry_on_timeout, retry.retry_on_statuses) == (True, False, {503})
    assert retry.methods == {"GET"}
    assert (breaker.failure_threshold, breaker.recovery_timeout_s, breaker.success_threshold) == (7, 60.0, 3)


def test_backoff_initial_must_not_exceed_max_after_merging():
    assert problems(HEAD + "routes:\n  - {name: a, match: {path: /}, to: legacy, retry: {backoff: {initial: 2s}}}\n") == [
        "routes.yaml:6:62: routes[0].retry.backoff: initial (2s) must not be longer than max (1s)"]


def test_retry_on_takes_connect_error_timeout_and_5xx_statuses():
    assert problems(HEAD + "defaults: {retry: {retry_on: [timeout, 404, reset]}}\n" + ROUTE) == [
        "routes.yaml:5:40: defaults.retry.retry_on[1]: expected connect-error, timeout or a status from 500 to 599, "
        "found the integer 404",
        "routes.yaml:5:45: defaults.retry.retry_on[2]: expected connect-error, timeout or a status from 500 to 599, "
        "found 'reset'",
    ]


def test_counts_must_be_at_least_one():
    assert problems(HEAD + "defaults: {retry: {attempts: 0}, circuit_breaker: {success_threshold: 1.5}}\n" + ROUTE) == [
        "routes.yaml:5:30: defaults.retry.attempts: expected an integer >= 1, found 0",
        "routes.yaml:5:71: defaults.circuit_breaker.success_threshold: expected an integer >= 1, found the number 1.5",
    ]


def test_limits_map_yaml_names_to_model_fields():
    config = parse_config(HEAD + """\
limits:
  max_url_length: 4KiB
  max_header_size: 32768
  max_header_count: 50
  max_body_size: 1MiB
  header_timeout: 5s
  body_idle_timeout: 250ms
  max_concurrent_requests: 10
""" + ROUTE)
    assert config.limits == Limits(max_url_bytes=4096, max_header_bytes=32768, max_header_count=50,
                                   max_body_bytes=1024**2, header_timeout_s=5.0, body_idle_timeout_s=0.25,
                                   max_concurrent_requests=10)


def test_access_log_and_expose_headers():
    config = parse_config(HEAD + "access_log: {enabled: false, format: json}\nexpose_headers: false\n" + ROUTE)
    assert config.access_log == AccessLog(enabled=False, format="json") and config.expose_headers is False
    assert problems(HEAD + "access_log: {format: xml}\n" + ROUTE) == [
        "routes.yaml:5:22: access_log.format: expected one of plain, json, found 'xml'"]


def test_trusted_proxies_are_networks_or_bare_addresses():
    config = parse_config(HEAD + "trusted_proxies: [10.0.0.0/8, 192.168.1.7, '::1', 10.1.2.3/16]\n" + ROUTE)
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.7/32"),
                                      ipaddress.ip_network("::1/128"), ipaddress.ip_network("10.1.0.0/16"))
    assert problems(HEAD + "trusted_proxies: [proxy.local]\n" + ROUTE) == [
        "routes.yaml:5:19: trusted_proxies[0]: expected an IP address or CIDR such as 10.0.0.0/8, found 'proxy.local'"]


def test_names_use_letters_digits_dot_dash_underscore():
    assert problems(HEAD + "routes:\n  - {name: 'a b', match: {path: /}, to: legacy}\n") == [
        "routes.yaml:6:12: routes[0].name: invalid name 'a b': use letters, digits, '_', '.' and '-'"]
    assert problems("version: 1\nupstreams:\n  'bad/name': {url: http://x}\n  legacy: {url: http://y}\n" + ROUTE) == [
        "routes.yaml:3:3: upstreams.bad/name: invalid name 'bad/name': use letters, digits, '_', '.' and '-'"]


def test_anchors_and_merge_keys_are_read_like_plain_mappings():
    config = parse_config(HEAD + """\
routes:
  - {name: a, match: {path: /a}, to: legacy, retry: &fast {attempts: 1, backoff: {initial: 10ms}}}
  - {name: b, match: {path: /b}, to: legacy, retry: {<<: *fast, attempts: 2}}
""")
    assert [route.retry.attempts for route in config.routes] == [1, 2]
    assert config.routes[1].retry.backoff_initial_s == 0.01
