"""The compose: section and path templates in the config: the model they read into, and every mistake with FILE:LINE:COL."""

from __future__ import annotations

import pytest

from strangler.cli import main
from strangler.config.loader import ConfigError, parse_config
from strangler.config.model import MAX_PART_BODY_BYTES

HEAD = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  orders: {url: "http://127.0.0.1:8101"}
routes:
"""
SUMMARY = HEAD + """\
  - name: order-summary
    match: {path: "/api/order-summary/{id}", methods: [GET, HEAD]}
    compose:
      order:    {upstream: orders, path: "/api/orders/{id}/", required: true}
      payment:  {upstream: legacy, path: "/api/payments/?order_id={id}", max_body_size: 64KiB}
    timeout: 800ms
  - name: everything-else
    match: {path: /}
    to: legacy
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "routes.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_a_composite_route_reads_into_parts_with_its_template_and_deadline():
    config = parse_config(SUMMARY, "routes.yaml")
    route = config.routes[0]
    assert route.match.path == "/api/order-summary/{id}" and route.match.template.names == ("id",)
    assert route.split == () and route.timeout_s == 0.8
    order, payment = route.compose
    assert (order.name, order.upstream, order.required, order.max_body_bytes) == ("order", "orders", True,
                                                                                  MAX_PART_BODY_BYTES)
    assert (payment.upstream, payment.required, payment.max_body_bytes) == ("legacy", False, 64 * 1024)
    assert payment.target.fill({"id": "7"}) == "/api/payments/?order_id=7"
    assert route.upstream_names == ("orders", "legacy")        # each gets its breaker on this route
    assert config.warnings == ()


def test_every_composite_mistake_is_reported_at_once_where_it_is():
    found = problems(HEAD + """\
  - name: summary
    match: {path: "/s/{id}", methods: [GET, POST]}
    to: legacy
    fallback: legacy
    compose:
      order: {upstream: orders, path: "/orders/{oid}/", required: true}
      pay: {upstream: payment, path: "/payments/?order_id={id}"}
      partial: {upstream: legacy, path: "/x"}
""")
    assert found == [
        "routes.yaml:7:39: routes[0].match.methods: a composite route answers only GET and HEAD, not POST",
        "routes.yaml:8:5: routes[0].to: a composite route takes no 'to': its parts say which upstreams answer",
        "routes.yaml:9:5: routes[0].fallback: a composite route takes no 'fallback': its parts say which upstreams answer",
        "routes.yaml:11:39: routes[0].compose.order.path: {oid} is not captured by the route's match.path "
        "(it captures id)",
        "routes.yaml:12:23: routes[0].compose.pay.upstream: unknown upstream 'payment' (known: legacy, orders)",
        "routes.yaml:13:7: routes[0].compose.partial: 'partial' is the answer's list of missing parts: "
        "give this part another name",
    ]


def test_compose_with_split_is_an_error_and_a_route_without_a_template_captures_nothing():
    found = problems(HEAD + """\
  - name: summary
    match: {path: /summary}
    split: {orders: 50, legacy: 50}
    compose:
      order: {upstream: orders, path: "/orders/{id}/", required: true}
""")
    assert found == [
        "routes.yaml:8:5: routes[0].split: a composite route takes no 'split': its parts say which upstreams answer",
        "routes.yaml:10:39: routes[0].compose.order.path: {id} is not captured by the route's match.path "
        "(it captures nothing)",
    ]


@pytest.mark.parametrize(("match", "message"), [
    ('"/x/{a:path}/y"', "routes.yaml:7:19: routes[0].match.path: {a:path} takes the rest of the path: it must come "
                        "last in '/x/{a:path}/y'"),
    ('"/x/{a:int}"', "routes.yaml:7:19: routes[0].match.path: unknown kind 'int' in '{a:int}': {a} matches one "
                     "segment, {a:path} the rest of the path"),
])
def test_a_bad_template_is_an_error_at_the_path(match, message):
    assert problems(HEAD + f"  - name: t\n    match: {{path: {match}}}\n    to: legacy\n") == [message]


def test_strip_prefix_needs_a_plain_prefix():
    assert problems(HEAD + """\
  - name: t
    match: {path: "/x/{id}"}
    strip_prefix: true
    to: legacy
""") == ["routes.yaml:8:5: routes[0].strip_prefix: strip_prefix needs a plain path prefix, not a template"]


def test_no_required_part_is_allowed_and_check_warns_about_it(tmp_path, capsys):
    path = tmp_path / "routes.yaml"
    path.write_text(SUMMARY.replace(", required: true", ""))
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert (f"warning: {path}:8:5: routes[0].compose: no part is required: the answer is 200 even when every part "
            "failed") in err
    assert "order-summary    GET,HEAD /api/order-summary/{id}  compose: order=orders, payment=legacy" in out


def test_a_prefix_route_shadows_a_template_under_it_and_a_template_shadows_only_itself():
    config = parse_config(HEAD + """\
  - {name: api, match: {path: /api}, to: legacy}
  - {name: summary, match: {path: "/api/summary/{id}"}, to: legacy}
  - {name: one, match: {path: "/x/{id}"}, to: legacy}
  - {name: two, match: {path: "/x/{id}/lines"}, to: legacy}
  - {name: three, match: {path: "/x/{id}"}, to: orders}
""", "routes.yaml")
    shadowed = [warning.split("route '")[1].split("'")[0] for warning in config.warnings]
    assert shadowed == ["summary", "three"]
