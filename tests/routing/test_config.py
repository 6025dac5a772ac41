"""The config loader: YAML route rules -> frozen model, or every problem at once."""

from __future__ import annotations

import hashlib
from textwrap import dedent

import pytest

from strangler.config.loader import ConfigError, Problem, load_config, parse_config
from strangler.config.model import Address, BreakerPolicy, Match, RetryPolicy, Sticky

CONTRACT_EXAMPLE = """\
version: 1

listen: {host: 127.0.0.1, port: 8000}        # command-line flags override
admin:  {host: 127.0.0.1, port: 9000}        # never on the public listener

upstreams:
  legacy:
    url: http://127.0.0.1:8001
    connect_timeout: 2s
    timeout: 30s
    max_concurrent: 256
    health: {path: /health/ready, interval: 5s}
  orders:
    url: http://127.0.0.1:8101
    max_concurrent: 64

defaults:
  retry:
    attempts: 3
    backoff: {initial: 50ms, max: 1s}
    retry_on: [connect-error, timeout, 502, 503, 504]
    methods: [GET, HEAD, OPTIONS, PUT, DELETE]
    budget: 20%
  circuit_breaker:
    failure_threshold: 5
    recovery_timeout: 30s
    success_threshold: 2
  sticky: cohort

routes:
  - name: orders
    match:
      path: /api/orders
      methods: [GET, POST]
      headers: {X-Beta: "1"}
      host: shop.example.com
    split: {orders: 25, legacy: 75}
    fallback: legacy
    sticky: header:X-User-Id
    strip_prefix: false
    timeout: 5s
    retry: {attempts: 2}
    circuit_breaker: {failure_threshold: 10}
  - name: everything-else
    match: {path: /}
    to: legacy
"""

# Four lines, so the routes in a test start at line 5 (or 6 after `routes:`).
HEAD = """\
version: 1
upstreams:
  legacy: {url: http://127.0.0.1:8001}
  orders: {url: http://127.0.0.1:8101}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(dedent(text), "routes.yaml")
    return [str(problem) for problem in info.value.problems]


def test_contract_example_parses_into_the_expected_model(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(CONTRACT_EXAMPLE)
    config = load_config(path)

    assert config.source == str(path)
    assert config.listen == Address(host="127.0.0.1", port=8000)
    assert config.admin == Address(host="127.0.0.1", port=9000)
    legacy, orders = config.upstreams
    assert (legacy.name, legacy.url, legacy.connect_timeout_s, legacy.timeout_s) == ("legacy", "http://127.0.0.1:8001", 2.0, 30.0)
    assert legacy.health is not None and (legacy.health.path, legacy.health.interval_s) == ("/health/ready", 5.0)
    assert (orders.max_concurrent, orders.health) == (64, None)

    first, second = config.routes
    assert first.name == "orders" and first.line == 31
    assert first.match == Match(path="/api/orders", methods=frozenset({"GET", "POST"}),
                                headers=(("x-beta", "1"),), host="shop.example.com")
    assert first.split == (("orders", 25.0), ("legacy", 75.0))
    assert first.fallback == "legacy"
    assert first.sticky == Sticky(kind="header", name="X-User-Id")      # overrides defaults.sticky
    assert (first.strip_prefix, first.timeout_s) == (False, 5.0)
    # retry: {attempts: 2} keeps every other key of defaults.retry
    assert first.retry == RetryPolicy(attempts=2, backoff_initial_s=0.05, backoff_max_s=1.0, budget_ratio=0.2)
    assert first.breaker == BreakerPolicy(failure_threshold=10, recovery_timeout_s=30.0, success_threshold=2)

    assert second.split == (("legacy", 100.0),)                          # `to:` shorthand
    assert second.sticky == Sticky(kind="cohort")
    assert second.retry.attempts == 3 and second.retry.budget_ratio == 0.2
    assert second.retry.backoff_initial_s == 0.05 and second.breaker.recovery_timeout_s == 30.0
    assert config.warnings == ()


def test_sha256_is_of_the_file_bytes(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_bytes(CONTRACT_EXAMPLE.encode())
    assert load_config(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert parse_config(CONTRACT_EXAMPLE).sha256 == hashlib.sha256(CONTRACT_EXAMPLE.encode()).hexdigest()


def test_unreadable_file_is_one_problem_at_line_1(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == (Problem(str(missing), 1, 1, "", "cannot read file: No such file or directory"),)
    assert str(info.value) == f"{missing}:1:1: cannot read file: No such file or directory"


def test_empty_file_is_a_problem():
    assert problems("# nothing yet\n") == [
        "routes.yaml:1:1: the file is empty: expected a mapping with version, upstreams and routes"]


def test_yaml_syntax_error_is_reported_at_its_mark():
    assert problems("routes: [a\nversion: 1\n") == [
        "routes.yaml:2:8: invalid YAML: expected ',' or ']', but got ':'"]


def test_several_problems_are_reported_at_once_in_file_order():
    found = problems(HEAD + """\
routes:
  - name: a
    match: {path: api}
    to: ordrs
  - name: a
    match: {path: /}
    split: {orders: 10, legacy: 80}
""")
    assert found == [
        "routes.yaml:7:19: routes[0].match.path: path must start with '/', found 'api'",
        "routes.yaml:8:9: routes[0].to: unknown upstream 'ordrs' (did you mean 'orders'?)",
        "routes.yaml:9:11: routes[1].name: duplicate route name 'a' (first at line 6)",
        "routes.yaml:11:5: routes[1].split: percentages add up to 90, not 100",
    ]
    assert str(ConfigError([])) == ""


def test_split_sum_is_reported_at_the_split_line():
    found = problems(HEAD + """\
routes:
  - {name: a, match: {path: /a}, to: legacy}
  - name: b
    match: {path: /b}
    split:
      orders: 10
      legacy: 80
""")
    assert found == ["routes.yaml:9:5: routes[1].split: percentages add up to 90, not 100"]


def test_split_allows_two_decimals_and_no_more():
    ok = parse_config(HEAD + "routes:\n  - {name: a, match: {path: /}, split: {orders: 12.25, legacy: 87.75}}\n")
    assert ok.routes[0].split == (("orders", 12.25), ("legacy", 87.75))
    assert problems(HEAD + "routes:\n  - {name: a, match: {path: /}, split: {orders: 0.125, legacy: 99.875}}\n") == [
        "routes.yaml:6:49: routes[0].split.orders: 0.125 has more than 2 decimals, finer than the 10,000 buckets",
        "routes.yaml:6:64: routes[0].split.legacy: 99.875 has more than 2 decimals, finer than the 10,000 buckets",
    ]


def test_split_and_to_are_exclusive_and_one_is_required():
    assert problems(HEAD + """\
routes:
  - {name: a, match: {path: /a}, to: legacy, split: {legacy: 100}}
  - {name: b, match: {path: /b}}
""") == [
        "routes.yaml:6:34: routes[0].to: use either split or to, not both",
        "routes.yaml:7:5: routes[1]: missing 'split' or 'to': say which upstream takes the traffic",
    ]


def test_duplicate_key_is_reported_at_the_second_occurrence():
    assert problems(HEAD + """\
routes:
  - name: a
    match: {path: /}
    to: legacy
    to: orders
""") == ["routes.yaml:9:5: routes[0].to: duplicate key 'to' (first at line 8)"]


def test_on_key_in_retry_says_write_retry_on():
    assert problems(HEAD + """\
defaults:
  retry:
    on: [502]
routes:
  - {name: a, match: {path: /}, to: legacy, retry: {on: [503]}}
""") == [
        "routes.yaml:7:5: defaults.retry: key 'on' reads as the boolean true in YAML; write 'retry_on'",
        "routes.yaml:9:53: routes[0].retry: key 'on' reads as the boolean true in YAML; write 'retry_on'",
    ]


def test_boolean_key_elsewhere_says_quote_it():
    assert problems(HEAD + "routes:\n  - {name: a, match: {path: /}, to: legacy, yes: 1}\n") == [
        "routes.yaml:6:45: routes[0]: key 'yes' reads as the boolean true in YAML; quote it"]


def test_header_value_yes_reads_as_boolean():
    assert problems(HEAD + """\
routes:
  - name: a
    match: {path: /, headers: {X-Beta: yes}}
    to: legacy
""") == ['routes.yaml:7:40: routes[0].match.headers.X-Beta: reads as the boolean true in YAML; quote it: "yes"']


def test_header_value_integer_must_be_quoted():
    assert problems(HEAD + "routes:\n  - {name: a, match: {path: /, headers: {X-Beta: 1}}, to: legacy}\n") == [
        'routes.yaml:6:50: routes[0].match.headers.X-Beta: expected a string, found the integer 1; quote it: "1"']


def test_unknown_key_suggests_the_nearest_valid_key():
    assert problems(HEAD + """\
defaults:
  circuit_breaker:
    failure_treshold: 3
routes:
  - {name: a, match: {path: /}, to: legacy}
""") == ["routes.yaml:7:5: defaults.circuit_breaker.failure_treshold: unknown key "
         "(did you mean 'failure_threshold'?)"]


def test_unknown_key_lists_the_valid_keys_when_nothing_is_close():
    assert problems(HEAD + "access_log: {zzz: 1}\nroutes:\n  - {name: a, match: {path: /}, to: legacy}\n") == [
        "routes.yaml:5:14: access_log.zzz: unknown key (expected one of: enabled, format)"]


def test_unknown_upstream_suggests_or_lists_the_known_ones():
    assert problems(HEAD + """\
routes:
  - {name: a, match: {path: /a}, split: {ordrs: 50, legacy: 50}}
  - {name: b, match: {path: /b}, to: legacy, fallback: billing}
""") == [
        "routes.yaml:6:42: routes[0].split.ordrs: unknown upstream 'ordrs' (did you mean 'orders'?)",
        "routes.yaml:7:56: routes[1].fallback: unknown upstream 'billing' (known: legacy, orders)",
    ]


def test_duplicate_route_name_points_at_the_first():
    assert problems(HEAD + """\
routes:
  - {name: a, match: {path: /a}, to: legacy}
  - {name: a, match: {path: /b}, to: legacy}
""") == ["routes.yaml:7:12: routes[1].name: duplicate route name 'a' (first at line 6)"]


def test_shadowed_route_is_a_warning_at_the_later_route():
    config = parse_config(HEAD + """\
routes:
  - {name: api, match: {path: /api}, to: legacy}
  - {name: apix, match: {path: /apix}, to: orders}
  - {name: b, match: {path: /api/orders, methods: [GET]}, to: orders}
""", "routes.yaml")
    assert config.warnings == (
        "routes.yaml:8:5: routes[2]: route 'b' is shadowed by route 'api' (routes[0]) and never matches",)


@pytest.mark.parametrize(
    ("first", "then", "shadowed"),
    [
        ("{path: /}", "{path: /x}", True),
        ("{path: /a}", "{path: /a}", True),
        ("{path: /a, methods: [GET, POST]}", "{path: /a/b, methods: [GET]}", True),
        ("{path: /a, methods: [GET]}", "{path: /a/b}", False),
        ("{path: /a, methods: [GET]}", "{path: /a/b, methods: [GET, POST]}", False),
        ("{path: /a, headers: {X-A: '1'}}", "{path: /a, headers: {x-a: '1', X-B: '2'}}", True),
        ("{path: /a, headers: {X-A: '1'}}", "{path: /a}", False),
        ("{path: /a, host: a.example}", "{path: /a, host: A.example}", True),
        ("{path: /a, host: a.example}", "{path: /a}", False),
        ("{path: /a}", "{path: /ab}", False),
    ],
)
def test_shadowing_needs_prefix_methods_headers_and_host_to_cover(first, then, shadowed):
    config = parse_config(HEAD + f"routes:\n  - {{name: x, match: {first}, to: legacy}}\n"
                                 f"  - {{name: y, match: {then}, to: legacy}}\n")
    assert bool(config.warnings) is shadowed


def test_no_routes_is_an_error():
    assert problems(HEAD) == ["routes.yaml:1:1: routes: no routes: every request would get 404"]
    assert problems(HEAD + "routes: []\n") == ["routes.yaml:5:9: routes: no routes: every request would get 404"]


def test_admin_must_not_share_the_public_listener():
    assert problems(HEAD + """\
listen: {host: 127.0.0.1, port: 8000}
admin: {host: 127.0.0.1, port: 8000}
routes:
  - {name: a, match: {path: /}, to: legacy}
""") == ["routes.yaml:6:8: admin: admin must not share the public listener"]
    both_zero = parse_config(HEAD + "listen: {port: 0}\nadmin: {port: 0}\nroutes:\n  - {name: a, match: {path: /}, to: legacy}\n")
    assert both_zero.listen.port == both_zero.admin.port == 0


def test_port_must_be_in_range():
    assert problems(HEAD + "listen: {port: 70000}\nroutes:\n  - {name: a, match: {path: /}, to: legacy}\n") == [
        "routes.yaml:5:16: listen.port: expected a port from 0 to 65535, found 70000"]


def test_type_errors_say_expected_and_found():
    assert problems(HEAD + """\
defaults: [retry]
routes:
  - {name: a, match: {path: /}, to: legacy, timeout: fast}
""") == [
        "routes.yaml:5:11: defaults: expected a mapping, found a list",
        "routes.yaml:7:54: routes[0].timeout: expected a duration such as 250ms, 2s or 1m, found 'fast'",
    ]


def test_version_must_be_1():
    assert problems("version: 2\n" + HEAD[len("version: 1\n"):] + "routes:\n  - {name: a, match: {path: /}, to: legacy}\n") == [
        "routes.yaml:1:10: version: expected version 1, found 2"]


def test_problem_formats_as_file_line_col_path_message():
    assert str(Problem("r.yaml", 14, 5, "routes[1].split", "percentages add up to 90, not 100")) == (
        "r.yaml:14:5: routes[1].split: percentages add up to 90, not 100")
