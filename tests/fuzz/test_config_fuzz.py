"""Fuzzing the config loader.

1. Arbitrary YAML-ish text, arbitrary bytes and random edits of a valid file never
   make `parse_config` raise anything but ConfigError, and every problem it reports
   is `FILE:LINE:COL: path: message` with a real position.
2. Valid configs, generated as data and written out as YAML, load back to exactly
   what was written (round trip), and a valid mutation of one (another split, a
   new route, changed limits) loads back to the mutated values.
"""

from __future__ import annotations

import hashlib
import re

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from strangler.config.loader import ConfigError, parse_config
from strangler.config.model import Limits
from tests.fuzz.budget import fuzz_settings

KEYS = [
    "version", "listen", "admin", "upstreams", "defaults", "routes", "trusted_proxies", "expose_headers",
    "limits", "access_log", "host", "port", "url", "connect_timeout", "timeout", "max_concurrent", "health",
    "path", "interval", "retry", "attempts", "backoff", "initial", "max", "retry_on", "on", "methods", "budget",
    "circuit_breaker", "failure_threshold", "recovery_timeout", "success_threshold", "sticky", "name", "match",
    "headers", "split", "to", "fallback", "strip_prefix", "max_body_size", "max_url_length", "max_header_size",
    "max_header_count", "header_timeout", "body_idle_timeout", "max_concurrent_requests", "enabled", "format",
    "legacy", "orders", "X-Beta", "rout", "upstream", "Version",
]
SCALARS = [
    "1", "0", "-1", "1.5", "1e309", "-.inf", ".nan", "~", "null", "yes", "no", "on", "off", "y", "true", "True",
    "250ms", "2s", "1m", "1h", "0s", "-1s", "1.5.5s", "64KiB", "10MiB", "0B", "20%", "150%", "12.345", "99999999999999999999",
    "http://127.0.0.1:8001", "https://h", "ftp://x", "http://u:p@h", "http://[::1]:1", "http://h:99999", "http://h/p",
    "/api", "/", "//x", "/a/../b", "/%2e%2e", "/%2F", "/a?b", "cohort", "header:X-U", "cookie:", "client-ip", "none",
    "GET", "get", "G ET", "'quoted'", '"dq"', '"unterminated', "0x1F", "0o17", "1_000", "2020-01-01", "10.0.0.0/8",
    "::1/129", "json", "plain", "!!int 0b", "!!int 0x", "!!int +", "!!int ''", "!!float .", "!!float abc",
    "!!bool maybe", "!!str 1", "!!null x", "!!binary aGk=", "!!timestamp 2020-02-30", "!!python/object:os.system",
    "!foo a", "&a x", "*a", "*undefined", "<<: *a", "<<: [*a, *b]", "|", ">-", "'it''s'", "\\u0000", "é", "\u2028",
]
PUNCT = [": ", ":", "- ", "-", "{", "}", "[", "]", ", ", ",", "\n", "\n  ", "\n    ", "\n      ", "  ", " # c",
         "---\n", "...\n", "? ", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t", "\r\n", "\r", "\x00", "\ufeff", "\x85"]

yamlish = st.lists(st.sampled_from(KEYS + SCALARS + PUNCT), max_size=80).map("".join)

VALID = """\
version: 1
listen: {host: 127.0.0.1, port: 8000}
admin: {host: 127.0.0.1, port: 9000}
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
  circuit_breaker: {failure_threshold: 5, recovery_timeout: 30s, success_threshold: 2}
  sticky: cohort
limits: {max_url_length: 8192, header_timeout: 10s}
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
    timeout: 5s
    retry: {attempts: 2}
  - name: everything-else
    match: {path: /}
    to: legacy
"""


@st.composite
def edited(draw: st.DrawFn) -> str:
    """The valid file with a few random edits: deletions, insertions, replaced or duplicated lines."""
    text = VALID
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["delete", "insert", "replace-line", "duplicate-line", "indent"]))
        at = draw(st.integers(0, len(text)))
        if kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif kind == "insert":
            text = text[:at] + draw(st.sampled_from(KEYS + SCALARS + PUNCT)) + text[at:]
        else:
            lines = text.split("\n")
            index = draw(st.integers(0, len(lines) - 1))
            if kind == "replace-line":
                lines[index] = draw(yamlish)
            elif kind == "duplicate-line":
                lines.insert(index, lines[index])
            else:
                lines[index] = draw(st.sampled_from(["", " ", "  ", "\t", "    "])) + lines[index]
            text = "\n".join(lines)
    return text


_POSITION = re.compile(r"^<string>:(\d+):(\d+): ")


def _loads_or_config_error(data: str | bytes) -> None:
    try:
        parse_config(data)
    except ConfigError as error:
        text = str(error)
        assert text
        lines = text.splitlines()
        assert lines and all(_POSITION.match(line) for line in lines), text
        for line in lines:
            row, col = map(int, _POSITION.match(line).groups())   # type: ignore[union-attr]
            assert row >= 1 and col >= 1


@fuzz_settings(120)
@given(st.one_of(yamlish, edited(), st.text(max_size=300)))
@example("version: !!int 0b")
@example("version: !!float .")
@example("version: !!bool maybe")
@example("version: !!int +")
@example("a: " + "[" * 600 + "]" * 600)
@example("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 600)))
@example("- &a [*a]")
@example("a: &a [*a, *a, *a]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c, *c]")
def test_any_text_loads_or_raises_config_error(text: str):
    _loads_or_config_error(text)


@fuzz_settings(60)
@given(st.binary(max_size=300))
@example(b"\xff\xfe\x00v\x00e\x00r")
@example(b"version: 1\n\xc3\x28")
def test_any_bytes_load_or_raise_config_error(data: bytes):
    _loads_or_config_error(data)


# Valid configs as data: what is written must be what is loaded.

_names = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)
_ms = st.integers(1, 600_000)
_segments = st.lists(st.from_regex(r"[a-z0-9][a-z0-9._~-]{0,5}", fullmatch=True).filter(
    lambda s: s not in (".", "..")), max_size=3)


@st.composite
def split_of(draw: st.DrawFn, upstreams: list[str]) -> dict[str, int]:
    chosen = draw(st.lists(st.sampled_from(upstreams), min_size=1, unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(chosen) - 1, max_size=len(chosen) - 1)))
    bounds = [0, *cuts, 100]
    return {name: bounds[i + 1] - bounds[i] for i, name in enumerate(chosen)}


@st.composite
def valid_documents(draw: st.DrawFn) -> dict:
    names = draw(st.lists(_names, min_size=1, max_size=3, unique=True))
    upstreams = {}
    for name in names:
        upstream: dict[str, object] = {"url": f"http://127.0.0.1:{draw(st.integers(1, 65535))}"}
        if draw(st.booleans()):
            upstream["timeout"] = f"{draw(_ms)}ms"
        if draw(st.booleans()):
            upstream["max_concurrent"] = draw(st.integers(1, 100_000))
        upstreams[name] = upstream
    routes = []
    for index, route_name in enumerate(draw(st.lists(_names, min_size=1, max_size=4, unique=True))):
        match: dict[str, object] = {"path": "/" + "/".join(draw(_segments))}
        if draw(st.booleans()):
            match["methods"] = draw(st.lists(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
                                             min_size=1, unique=True))
        if draw(st.booleans()):
            match["headers"] = {"X-Beta": draw(st.sampled_from(["1", "yes", "on", "a b"]))}
        route: dict[str, object] = {"name": route_name, "match": match}
        if draw(st.booleans()):
            route["to"] = draw(st.sampled_from(names))
        else:
            route["split"] = draw(split_of(names))
        if draw(st.booleans()):
            route["fallback"] = draw(st.sampled_from(names))
        if draw(st.booleans()):
            route["sticky"] = draw(st.sampled_from(["cohort", "none", "client-ip", "header:X-User-Id",
                                                    "cookie:session"]))
        if draw(st.booleans()):
            route["timeout"] = f"{draw(_ms)}ms"
        if draw(st.booleans()):
            route["retry"] = {"attempts": draw(st.integers(1, 10))}
        if draw(st.booleans()):
            route["max_body_size"] = draw(st.integers(1, 2**40))
        routes.append(route)
    document: dict[str, object] = {"version": 1, "upstreams": upstreams, "routes": routes}
    if draw(st.booleans()):
        document["limits"] = draw(st.fixed_dictionaries({}, optional={
            "max_url_length": st.integers(1, 10**6),
            "max_header_count": st.integers(1, 10**4),
            "header_timeout": _ms.map(lambda ms: f"{ms}ms"),
            "body_idle_timeout": _ms.map(lambda ms: f"{ms}ms"),
            "max_concurrent_requests": st.integers(1, 10**6),
        }))
    return document


def _check_loaded(document: dict, text: str) -> None:
    config = parse_config(text)
    assert config.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert {u.name: u.url for u in config.upstreams} == {name: spec["url"] for name, spec in document["upstreams"].items()}
    for upstream in config.upstreams:
        spec = document["upstreams"][upstream.name]
        if "timeout" in spec:
            assert round(upstream.timeout_s * 1000) == int(spec["timeout"][:-2])
        if "max_concurrent" in spec:
            assert upstream.max_concurrent == spec["max_concurrent"]
    assert [route.name for route in config.routes] == [route["name"] for route in document["routes"]]
    for route, spec in zip(config.routes, document["routes"]):
        assert route.match.path == spec["match"]["path"]
        if "methods" in spec["match"]:
            assert route.match.methods == frozenset(spec["match"]["methods"])
        if "headers" in spec["match"]:
            assert route.match.headers == (("x-beta", spec["match"]["headers"]["X-Beta"]),)
        expected_split = ({spec["to"]: 100} if "to" in spec else spec["split"])
        assert dict(route.split) == expected_split
        assert [name for name, _ in route.split] == list(expected_split)       # file order kept
        assert route.fallback == spec.get("fallback")
        if "sticky" in spec:
            assert route.sticky.describe() == spec["sticky"]
        if "timeout" in spec:
            assert round(route.timeout_s * 1000) == int(spec["timeout"][:-2])
        if "retry" in spec:
            assert route.retry.attempts == spec["retry"]["attempts"]
        assert route.max_body_bytes == spec.get("max_body_size")
    limits = document.get("limits", {})
    assert config.limits.max_url_bytes == limits.get("max_url_length", Limits().max_url_bytes)
    assert config.limits.max_header_count == limits.get("max_header_count", Limits().max_header_count)
    assert config.limits.max_concurrent_requests == limits.get("max_concurrent_requests",
                                                               Limits().max_concurrent_requests)
    if "header_timeout" in limits:
        assert round(config.limits.header_timeout_s * 1000) == int(limits["header_timeout"][:-2])
    # Loading is deterministic: the same text, the same config.
    assert parse_config(text) == config


@fuzz_settings(40)
@given(valid_documents(), st.sampled_from([{}, {"default_flow_style": True}, {"indent": 4}]))
def test_valid_configs_round_trip(document: dict, style: dict):
    _check_loaded(document, yaml.safe_dump(document, sort_keys=False, allow_unicode=True, **style))


@fuzz_settings(40)
@given(valid_documents(), st.data())
def test_valid_mutations_round_trip(document: dict, data: st.DataObject):
    names = list(document["upstreams"])
    mutation = data.draw(st.sampled_from(["resplit", "add-route", "drop-route", "limits", "rename-upstream"]))
    routes = document["routes"]
    if mutation == "resplit":
        route = data.draw(st.sampled_from(routes))
        route.pop("to", None)
        route["split"] = data.draw(split_of(names))
    elif mutation == "add-route":
        taken = {route["name"] for route in routes}
        name = data.draw(_names.filter(lambda n: n not in taken))
        routes.insert(data.draw(st.integers(0, len(routes))),
                      {"name": name, "match": {"path": "/new"}, "to": data.draw(st.sampled_from(names))})
    elif mutation == "drop-route" and len(routes) > 1:
        routes.pop(data.draw(st.integers(0, len(routes) - 1)))
    elif mutation == "limits":
        document["limits"] = {"max_url_length": data.draw(st.integers(1, 10**6)),
                              "max_concurrent_requests": data.draw(st.integers(1, 10**6))}
    elif mutation == "rename-upstream":
        old = data.draw(st.sampled_from(names))
        new = data.draw(_names.filter(lambda n: n not in names))
        document["upstreams"] = {(new if key == old else key): spec for key, spec in document["upstreams"].items()}
        for route in routes:
            if route.get("to") == old:
                route["to"] = new
            if route.get("fallback") == old:
                route["fallback"] = new
            if "split" in route:
                route["split"] = {(new if key == old else key): share for key, share in route["split"].items()}
    _check_loaded(document, yaml.safe_dump(document, sort_keys=False))
