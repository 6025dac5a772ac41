"""The `shadow:` block: read with its defaults, refused with FILE:LINE:COL, warned about, explained."""

from __future__ import annotations

import io

import pytest

from strangler.cli import main
from strangler.config.loader import ConfigError, parse_config
from strangler.config.model import Shadow, ShadowCompare
from strangler.explain import explain_request
from strangler.headers import upstream_request_headers

BASE = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  orders: {url: "http://127.0.0.1:8101"}
routes:
  - name: orders-read
    match: {path: /api/orders}
    split: {orders: 10, legacy: 90}
    shadow:
"""


def config(block: str) -> str:
    return BASE + "".join(f"      {line}\n" for line in block.strip().splitlines())


def problems(block: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(block), "routes.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_the_defaults_of_a_shadow_block():
    route = parse_config(config("upstream: orders")).routes[0]
    assert route.shadow == Shadow(upstream="orders")
    assert route.shadow.methods == {"GET", "HEAD"} and route.shadow.percent == 100
    assert route.shadow.max_body_bytes == 1024 * 1024 and route.shadow.max_concurrent == 16
    assert route.shadow.compare.ignore_headers == {"date", "server", "x-request-id", "set-cookie", "content-length"}


def test_every_setting_is_read():
    route = parse_config(config("""
upstream: orders
percent: 12.5%
methods: [GET, POST]
allow_writes: true
max_concurrent: 4
max_body: 64KiB
compare:
  ignore_headers: [Date, ETag]
  ignore_fields: ["$.created_at", "$.orders[*].updated_at"]
  noise: learn
""")).routes[0]
    assert route.shadow == Shadow(upstream="orders", percent=12.5, methods=frozenset({"GET", "POST"}),
                                  allow_writes=True, max_concurrent=4, max_body_bytes=65536,
                                  compare=ShadowCompare(ignore_headers=frozenset({"date", "etag"}),
                                                        ignore_fields=("$.created_at", "$.orders[*].updated_at"),
                                                        learn_noise=True))


@pytest.mark.parametrize("noise", ["off", "false", '"off"'])
def test_noise_off_as_the_contract_writes_it(noise):
    assert not parse_config(config(f"{{upstream: orders, compare: {{noise: {noise}}}}}")).routes[0].shadow.compare.learn_noise


def test_bad_shadow_blocks_are_refused_with_file_line_and_column():
    found = problems("""
upstream: ordrs
percent: 150
methods: [GET, POST]
compare: {ignore_fields: ["$.orders[", "$.ok"], noise: sometimes, ignore_header: [date]}
""")
    assert found == [
        "routes.yaml:10:17: routes[0].shadow.upstream: unknown upstream 'ordrs' (did you mean 'orders'?)",
        "routes.yaml:11:16: routes[0].shadow.percent: expected a percent from 0 to 100, found 150",
        "routes.yaml:12:16: routes[0].shadow.methods: POST would be applied twice, by the route's upstream and by "
        "the shadow: add allow_writes: true to copy writes",
        "routes.yaml:13:33: routes[0].shadow.compare.ignore_fields[0]: invalid JSONPath '$.orders[': "
        "Parse error near the end of string!",
        "routes.yaml:13:62: routes[0].shadow.compare.noise: expected off or learn, found 'sometimes'",
        "routes.yaml:13:73: routes[0].shadow.compare.ignore_header: unknown key (did you mean 'ignore_headers'?)",
    ]


def test_a_shadow_that_already_takes_all_the_traffic_is_refused():
    text = config("upstream: orders").replace("split: {orders: 10, legacy: 90}", "to: orders")
    with pytest.raises(ConfigError, match="'orders' already takes all of this route's traffic"):
        parse_config(text)


def test_check_warns_about_a_route_that_copies_writes(tmp_path, capsys):
    path = tmp_path / "routes.yaml"
    path.write_text(config("{upstream: orders, methods: [GET, POST], allow_writes: true}"))
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"warning: {path}:10:7: routes[0].shadow: route 'orders-read' copies writes (POST) to 'orders'" in err
    assert "orders 100% of GET,POST" in out.splitlines()[2]


def test_explain_says_whether_a_request_is_copied_and_to_where(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(config("{upstream: orders, percent: 10}").replace("split: {orders: 10, legacy: 90}", "to: legacy"))

    def explain(method: str) -> str:
        out = io.StringIO()
        explain_request(str(path), method, "/api/orders/7", [], out=out)
        return out.getvalue().splitlines()[-1]

    assert explain("GET") == ("shadow: a copy goes to orders=http://127.0.0.1:8101 (sampled at random, 10% of the "
                              "time), marked X-Strangler-Shadow: 1; its answer is compared with the client's, never sent")
    assert explain("POST") == "shadow: not copied (POST is not in shadow.methods: GET, HEAD)"


def test_a_client_cannot_send_the_proxys_own_fields():
    headers = upstream_request_headers([(b"Host", b"shop"), (b"X-Strangler-Shadow", b"1"), (b"x-strangler-route", b"a"),
                                        (b"X_Strangler_Shadow", b"1"), (b"X-Other", b"kept")],
                                       client_ip="10.0.0.1", scheme="http", trusted_client=True)
    assert not any(name.lower().replace(b"_", b"-").startswith(b"x-strangler-") for name, _ in headers)
    assert (b"X-Other", b"kept") in headers
