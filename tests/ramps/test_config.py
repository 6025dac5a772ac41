"""The config's ramp block, role: legacy, state_dir and admin.token: the model, and every mistake at FILE:LINE:COL."""

from __future__ import annotations

from textwrap import dedent

import pytest

from strangler.config.loader import ConfigError, load_admin, load_config, parse_config
from strangler.config.model import Gates

UPSTREAMS = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:8001", role: legacy}
  orders: {url: "http://127.0.0.1:8101"}
routes:
"""


def route(ramp: str, split: str = "{orders: 5, legacy: 95}", head: str = UPSTREAMS) -> str:
    return head + f"  - name: r\n    match: {{path: /}}\n    split: {split}\n    ramp: {ramp}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(dedent(text), "routes.yaml")
    return [str(problem) for problem in info.value.problems]


def test_a_ramp_block_reads_into_the_model_with_its_defaults() -> None:
    config = parse_config(route("""
      to: orders
      steps: [5, 10, 25, 50, 100]
      every: 10m
      gates: {min_requests: 200, max_error_rate: 1%, max_error_rate_increase: 0.5%, max_p95_ratio: 1.5}
      on_breach: hold""".replace("\n", "\n  ")))
    ramp = config.routes[0].ramp
    assert ramp is not None and config.legacy == "legacy"
    assert (ramp.to, ramp.legacy, ramp.steps, ramp.every_s, ramp.on_breach) == (
        "orders", "legacy", (5, 10, 25, 50, 100), 600, "hold")
    assert ramp.gates == Gates(min_requests=200, max_error_rate_percent=1, max_error_rate_increase_percent=0.5,
                               max_p95_ratio=1.5)
    plain = parse_config(route("{to: orders, steps: [50, 100], every: 1s}")).routes[0].ramp
    assert plain is not None and plain.gates == Gates() and plain.gates.min_requests == 100
    assert plain.on_breach == "rollback"


def test_the_ramp_id_changes_with_the_block_or_the_split_and_nothing_else() -> None:
    def ramp_id(text: str) -> str:
        found = parse_config(text).routes[0].ramp
        assert found is not None
        return found.id

    base = route("{to: orders, steps: [50, 100], every: 1s}")
    assert ramp_id(base) == ramp_id(base.replace("version: 1\n", "version: 1\n# a comment\n"))
    assert ramp_id(base) != ramp_id(route("{to: orders, steps: [50, 100], every: 2s}"))
    assert ramp_id(base) != ramp_id(route("{to: orders, steps: [50, 100], every: 1s}", "{orders: 10, legacy: 90}"))


@pytest.mark.parametrize("ramp, split, expected", [
    ("{to: orders, steps: [5, 50, 25], every: 1s}", None,
     "routes.yaml:9:39: routes[0].ramp.steps[2]: steps must increase: 25 comes after 50"),
    ("{to: orders, steps: [5, 120], every: 1s}", None,
     "routes.yaml:9:35: routes[0].ramp.steps[1]: expected a percent from 0 to 100, found 120"),
    ("{to: orders, steps: [], every: 1s}", None,
     "routes.yaml:9:31: routes[0].ramp.steps: steps is empty"),
    ("{to: ordrs, steps: [50], every: 1s}", None,
     "routes.yaml:9:16: routes[0].ramp.to: 'ordrs' is not in the route's split (did you mean 'orders'?)"),
    ("{to: legacy, steps: [50], every: 1s}", None,
     "routes.yaml:9:16: routes[0].ramp.to: 'legacy' is the legacy upstream"),
    ("{to: orders, steps: [50], every: soon}", None,
     "routes.yaml:9:44: routes[0].ramp.every: expected a duration such as 250ms, 2s or 1m, found 'soon'"),
    ("{to: orders, steps: [50], every: 1s, gates: {max_error_rate: lots}}", None,
     "routes.yaml:9:72: routes[0].ramp.gates.max_error_rate: expected a percent such as 20% or 12.5"),
    ("{to: orders, steps: [50], every: 1s, gates: {min_shadow_match: 99%}}", None,
     "routes.yaml:9:56: routes[0].ramp.gates.min_shadow_match: min_shadow_match needs shadow on this route"),
    ("{to: orders, steps: [50], every: 1s, on_breach: panic}", None,
     "routes.yaml:9:59: routes[0].ramp.on_breach: expected one of rollback, hold, found 'panic'"),
    ("{to: orders, steps: [50], every: 1s, gate: {}}", None,
     "routes.yaml:9:48: routes[0].ramp.gate: unknown key (did you mean 'gates'?)"),
    ("{to: orders, steps: [50], every: 1s}", "{orders: 100}",
     "routes.yaml:9:5: routes[0].ramp: the route's split does not name the legacy upstream 'legacy'"),
])
def test_ramp_mistakes_are_reported_where_they_are(ramp: str, split: str | None, expected: str) -> None:
    found = problems(route(ramp, split or "{orders: 5, legacy: 95}"))
    assert any(line.startswith(expected) for line in found), found


def test_a_ramp_needs_a_legacy_upstream_and_there_is_only_one() -> None:
    no_role = UPSTREAMS.replace(", role: legacy", "")
    assert problems(route("{to: orders, steps: [50], every: 1s}", head=no_role)) == [
        "routes.yaml:9:5: routes[0].ramp: a ramp moves shares away from the legacy upstream, but no upstream "
        "says role: legacy"]
    two = UPSTREAMS.replace('8101"}', '8101", role: legacy}')
    assert problems(two + "  - {name: r, match: {path: /}, to: legacy}\n") == [
        "routes.yaml:4:48: upstreams.orders.role: 'legacy' already has role: legacy (line 3); exactly one upstream "
        "may be the legacy one"]
    assert problems(UPSTREAMS.replace("role: legacy", "role: monolith") + "  - {name: r, match: {path: /}, to: legacy}\n") == [
        "routes.yaml:3:48: upstreams.legacy.role: expected one of legacy, found 'monolith'"]


def test_a_ramp_moves_shares_between_to_and_legacy_only() -> None:
    head = UPSTREAMS + ""
    head = head.replace("routes:\n", '  other: {url: "http://127.0.0.1:8102"}\nroutes:\n')
    assert problems(route("{to: orders, steps: [50], every: 1s}", "{orders: 5, legacy: 90, other: 5}", head)) == [
        "routes.yaml:10:5: routes[0].ramp: a ramp moves shares between 'orders' and 'legacy' only, but the split "
        "also names 'other'"]


def test_state_dir_defaults_beside_the_config_and_is_read_from_its_folder(tmp_path) -> None:
    path = tmp_path / "conf" / "routes.yaml"
    path.parent.mkdir()
    path.write_text(UPSTREAMS + "  - {name: r, match: {path: /}, to: legacy}\n")
    assert load_config(path).state_dir == str(tmp_path / "conf" / "var" / "strangler")
    path.write_text("state_dir: ../state\n" + path.read_text())
    assert load_config(path).state_dir == str(tmp_path / "state")
    path.write_text(f"state_dir: {tmp_path}/abs\n" + path.read_text().split("\n", 1)[1])
    assert load_config(path).state_dir == str(tmp_path / "abs")


def test_the_admin_token_is_read_and_must_not_be_empty(tmp_path) -> None:
    text = UPSTREAMS.replace("version: 1\n", "version: 1\nadmin: {port: 9100, token: s3cret}\n")
    assert parse_config(text + "  - {name: r, match: {path: /}, to: legacy}\n").admin_token == "s3cret"
    assert problems(text.replace("s3cret", '" "') + "  - {name: r, match: {path: /}, to: legacy}\n") == [
        "routes.yaml:2:28: admin.token: token must not be empty: leave it out to run without one"]


def test_the_admin_address_and_token_read_even_from_an_invalid_file(tmp_path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("version: 1\nadmin: {port: 9100, token: s3cret}\nroutes: oops\n")
    address, token = load_admin(path)       # type: ignore[misc]
    assert (address.host, address.port, token) == ("127.0.0.1", 9100, "s3cret")
    path.write_text("{{{")
    assert load_admin(path) is None
