"""The routes section: match rules, splits, per-route overrides, and shadowed routes."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from . import compose, ramps, sections, values
from .shadow import shadow
from .model import BreakerPolicy, EncodedSlash, Match, RetryPolicy, Route, Sticky
from .reader import Fields, Reader, join
from .source import Node
from .template import parse_path_template

ROUTE_KEYS = ("name", "match", "split", "to", "fallback", "sticky", "strip_prefix", "timeout",
              "retry", "circuit_breaker", "max_body_size", "shadow", "ramp", "compose", "paths")
MATCH_KEYS = ("path", "methods", "headers", "host")
BUCKETS_PER_PERCENT = 100  # 10,000 buckets: a split can say 0.01% and no finer


@dataclass(frozen=True, slots=True)
class Defaults:
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    sticky: Sticky = Sticky()
    encoded_slash: EncodedSlash = "reject"     # the top-level paths.encoded_slash


@dataclass(frozen=True, slots=True)
class ReadRoute:
    """A route that read without problems, with where it came from."""

    route: Route
    path: str
    node: Node


def routes(r: Reader, node: Node, path: str, known: Mapping[str, object], defaults: Defaults,
           legacy: str | None = None) -> list[ReadRoute]:
    result: list[ReadRoute] = []
    first_line: dict[str, int] = {}
    for where, item in r.items(node, path):
        before = len(r.problems)
        route = _route(r, item, where, known, defaults, first_line, legacy)
        # Build only what read cleanly; the problems already say what is wrong.
        if route is not None and len(r.problems) == before:
            result.append(ReadRoute(route, where, item))
    return result


def _route(r: Reader, node: Node, path: str, known: Mapping[str, object], defaults: Defaults,
           first_line: dict[str, int], legacy: str | None) -> Route | None:
    fields = r.mapping(node, path, ROUTE_KEYS)
    if fields is None:
        return None
    name_node = r.require(fields, "name", node, path)
    name = r.text(name_node, join(path, "name"), values.name) if name_node else None
    if name is not None and name_node is not None:
        if name in first_line:
            r.problem(name_node, join(path, "name"), f"duplicate route name '{name}' (first at line {first_line[name]})")
        first_line.setdefault(name, name_node.line)
    match_node = r.require(fields, "match", node, path)
    match = _match(r, match_node, join(path, "match")) if match_node else None
    if "compose" in fields:
        parts = compose.parts(r, fields, path, match, lambda at, where: upstream_ref(r, at, where, known))
        split: tuple[tuple[str, float], ...] | None = () if parts is not None else None
    else:
        parts, split = (), _split_or_to(r, fields, node, path, known)
    route: dict[str, object] = {
        "sticky": defaults.sticky,
        "retry": sections.retry(r, fields["retry"], join(path, "retry"), defaults.retry)
        if "retry" in fields else defaults.retry,
        "breaker": sections.breaker(r, fields["circuit_breaker"], join(path, "circuit_breaker"), defaults.breaker)
        if "circuit_breaker" in fields else defaults.breaker,
        "encoded_slash": sections.paths(r, fields["paths"], join(path, "paths"))
        if "paths" in fields else defaults.encoded_slash,
    }
    if "fallback" in fields:
        route["fallback"] = upstream_ref(r, fields["fallback"], join(path, "fallback"), known)
    if "sticky" in fields:
        route["sticky"] = r.text(fields["sticky"], join(path, "sticky"), values.sticky)
    if "strip_prefix" in fields:
        route["strip_prefix"] = r.boolean(fields["strip_prefix"], join(path, "strip_prefix"))
        if match is not None and match.template is not None:
            r.problem(fields.key_nodes["strip_prefix"], join(path, "strip_prefix"),
                      "strip_prefix needs a plain path prefix, not a template")
    if "timeout" in fields:
        route["timeout_s"] = r.value(fields["timeout"], join(path, "timeout"), values.duration)
    if "max_body_size" in fields:
        route["max_body_bytes"] = r.value(fields["max_body_size"], join(path, "max_body_size"), values.size)
    if "shadow" in fields and "compose" not in fields:
        route["shadow"] = shadow(r, fields["shadow"], join(path, "shadow"),
                                 lambda at, where: upstream_ref(r, at, where, known), split)
    if "ramp" in fields and "compose" not in fields:
        route["ramp"] = ramps.ramp(r, fields["ramp"], fields.key_nodes["ramp"], join(path, "ramp"), split=split,
                                   legacy=legacy, has_shadow="shadow" in fields)
    if name is None or match is None or split is None or parts is None or None in route.values():
        return None
    return Route(name=name, match=match, split=split, compose=parts, line=node.line, **route)  # type: ignore[arg-type]


def _match(r: Reader, node: Node, path: str) -> Match | None:
    fields = r.mapping(node, path, MATCH_KEYS)
    if fields is None:
        return None
    path_node = r.require(fields, "path", node, path)
    match: dict[str, object] = {}
    prefix = None
    if path_node is not None and path_node.kind == "scalar" and "{" in path_node.text:
        template = match["template"] = r.text(path_node, join(path, "path"), parse_path_template)
        prefix = template.text if template is not None else None
    elif path_node is not None:
        prefix = r.text(path_node, join(path, "path"), values.route_path)
    if "methods" in fields:
        match["methods"] = methods = sections.methods(r, fields["methods"], join(path, "methods"))
        if methods == frozenset():
            r.problem(fields["methods"], join(path, "methods"), "methods is empty, so the route never matches; "
                      "leave it out to match any method")
    if "headers" in fields:
        match["headers"] = _headers(r, fields["headers"], join(path, "headers"))
    if "host" in fields:
        match["host"] = r.text(fields["host"], join(path, "host"), values.host)
    if prefix is None or None in match.values():
        return None
    return Match(path=prefix, **match)  # type: ignore[arg-type]


def _headers(r: Reader, node: Node, path: str) -> tuple[tuple[str, str], ...] | None:
    headers: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    ok = True
    for name, key, value_node in r.entries(node, path) or []:
        where = join(path, name)
        lower = r.value(key, where, lambda _: values.token(name).lower())
        value = r.string(value_node, where)
        if lower is not None and lower in first_line:
            r.problem(key, where, f"duplicate header '{name}' (first at line {first_line[lower]})")
            lower = None
        if lower is None or value is None:
            ok = False
            continue
        first_line[lower] = key.line
        headers.append((lower, value))
    return tuple(headers) if ok and node.kind == "mapping" else None


def _split_or_to(r: Reader, fields: Fields, node: Node, path: str,
                 known: Mapping[str, object]) -> tuple[tuple[str, float], ...] | None:
    if "split" in fields and "to" in fields:
        r.problem(fields.key_nodes["to"], join(path, "to"), "use either split or to, not both")
        return None
    if "to" in fields:
        target = upstream_ref(r, fields["to"], join(path, "to"), known)
        return None if target is None else ((target, 100.0),)
    if "split" not in fields:
        r.problem(node, path, "missing 'split' or 'to': say which upstream takes the traffic")
        return None
    return _split(r, fields["split"], fields.key_nodes["split"], join(path, "split"), known)


def _split(r: Reader, node: Node, key: Node, path: str, known: Mapping[str, object]) -> tuple[tuple[str, float], ...] | None:
    entries = r.entries(node, path)
    if entries is None:
        return None
    if not entries:
        r.problem(key, path, "split is empty: give each upstream a percent, adding up to 100")
        return None
    split: list[tuple[str, float]] = []
    buckets: list[int] = []
    for name, name_node, value in entries:
        where = join(path, name)
        upstream = _known(r, name_node, where, name, known)
        share = r.value(value, where, values.percent)
        if share is not None:
            scaled = round(share * BUCKETS_PER_PERCENT)
            if abs(share * BUCKETS_PER_PERCENT - scaled) > 1e-6:
                r.problem(value, where, f"{value.text} has more than 2 decimals, finer than the 10,000 buckets")
            else:
                buckets.append(scaled)
        if upstream is not None and share is not None:
            split.append((upstream, share))
    if len(buckets) == len(entries) and sum(buckets) != 100 * BUCKETS_PER_PERCENT:
        total = sum(buckets) / BUCKETS_PER_PERCENT
        r.problem(key, path, f"percentages add up to {total:g}, not 100")
        return None
    return tuple(split) if len(split) == len(entries) else None


def upstream_ref(r: Reader, node: Node, path: str, known: Mapping[str, object]) -> str | None:
    name = r.string(node, path)
    return None if name is None else _known(r, node, path, name, known)


def _known(r: Reader, node: Node, path: str, name: str, known: Mapping[str, object]) -> str | None:
    if name in known:
        return name
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        tip = f"did you mean '{close[0]}'?"
    else:
        tip = "known: " + ", ".join(known) if known else "no upstreams are defined"
    r.problem(node, path, f"unknown upstream '{name}' ({tip})")
    return None


def shadowing(r: Reader, read: list[ReadRoute]) -> list[str]:
    """Warnings for routes that an earlier route always matches first."""
    warnings = []
    for j, later in enumerate(read):
        for earlier in read[:j]:
            if _covers(earlier.route.match, later.route.match):
                message = (f"route '{later.route.name}' is shadowed by route '{earlier.route.name}' "
                           f"({earlier.path}) and never matches")
                warnings.append(r.format(later.node, later.path, message))
                break
    return warnings


def _covers(first: Match, then: Match) -> bool:
    """True when every request `then` matches is matched by `first` too."""
    # A template matches whole paths: it covers the same template only. Every path a template
    # matches lies under its literal prefix.
    then_path = then.template.prefix if then.template is not None else then.path
    if first.template is not None:
        prefix = then.path == first.path
    else:
        prefix = first.path == "/" or then_path == first.path or then_path.startswith(first.path + "/")
    methods = first.methods is None or (then.methods is not None and first.methods >= then.methods)
    headers = set(first.headers) <= set(then.headers)
    host = first.host is None or first.host == then.host
    return prefix and methods and headers and host
