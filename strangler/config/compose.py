"""A composite route's `compose:` section: its parts, checked against the route's match and upstreams."""

from __future__ import annotations

from collections.abc import Callable

from . import values
from .model import Match, Part
from .reader import Fields, Reader, join
from .source import Node
from .template import parse_part_target

PART_KEYS = ("upstream", "path", "required", "max_body_size")
# The parts say which upstreams answer, so these route keys would mean nothing on a composite route.
NOT_WITH_COMPOSE = ("split", "to", "shadow", "fallback", "sticky", "strip_prefix", "ramp")
ANSWER_METHODS = frozenset({"GET", "HEAD"})
# The answer's own key beside the parts: the parts that are missing from it.
PARTIAL_KEY = "partial"


# The name of the upstream a node refers to, or None (the problem reported): routes.upstream_ref.
UpstreamRef = Callable[[Node, str], "str | None"]


def parts(r: Reader, fields: Fields, path: str, match: Match | None,
          upstream_ref: UpstreamRef) -> tuple[Part, ...] | None:
    """The parts of `compose`, or None when any is wrong; `match` None when the route's match did not read."""
    for key in NOT_WITH_COMPOSE:
        if key in fields:
            r.problem(fields.key_nodes[key], join(path, key),
                      f"a composite route takes no '{key}': its parts say which upstreams answer")
    if match is not None and match.methods is not None and not match.methods <= ANSWER_METHODS:
        others = ", ".join(sorted(match.methods - ANSWER_METHODS))
        r.problem(_methods_node(fields["match"]), join(path, "match.methods"),
                  f"a composite route answers only GET and HEAD, not {others}")
    where = join(path, "compose")
    entries = r.entries(fields["compose"], where)
    if entries is None:
        return None
    if not entries:
        r.problem(fields.key_nodes["compose"], where, "compose is empty: name each part with its upstream and path")
        return None
    captured = set(match.template.names) if match is not None and match.template is not None else set()
    found = [_part(r, name, key, value, join(where, name), upstream_ref, captured if match is not None else None)
             for name, key, value in entries]
    if None in found:
        return None
    if not any(part.required for part in found):  # type: ignore[union-attr]
        r.warn(fields.key_nodes["compose"], where, "no part is required: the answer is 200 even when every part "
               "failed; mark the part the answer cannot do without with required: true")
    return tuple(found)  # type: ignore[arg-type]


def _part(r: Reader, name: str, key: Node, node: Node, path: str, upstream_ref: UpstreamRef,
          captured: set[str] | None) -> Part | None:
    ok = r.value(key, path, lambda _: values.name(name)) is not None
    if name == PARTIAL_KEY:
        r.problem(key, path, f"'{PARTIAL_KEY}' is the answer's list of missing parts: give this part another name")
        ok = False
    fields = r.mapping(node, path, PART_KEYS)
    if fields is None:
        return None
    upstream_node = r.require(fields, "upstream", node, path)
    path_node = r.require(fields, "path", node, path)
    upstream = upstream_ref(upstream_node, join(path, "upstream")) if upstream_node else None
    target = r.text(path_node, join(path, "path"), parse_part_target) if path_node else None
    if target is not None and captured is not None and not target.names <= captured:
        missing = ", ".join(f"{{{name}}}" for name in sorted(target.names - captured))
        has = f"it captures {', '.join(sorted(captured))}" if captured else "it captures nothing"
        r.problem(path_node, join(path, "path"), f"{missing} is not captured by the route's match.path ({has})")
        target = None
    settings: dict[str, object] = {}
    if "required" in fields:
        settings["required"] = r.boolean(fields["required"], join(path, "required"))
    if "max_body_size" in fields:
        settings["max_body_bytes"] = r.value(fields["max_body_size"], join(path, "max_body_size"), values.size)
    if not ok or upstream is None or target is None or None in settings.values():
        return None
    return Part(name=name, upstream=upstream, target=target, **settings)  # type: ignore[arg-type]


def _methods_node(match: Node) -> Node:
    return next((value for key, value in match.items if key.text == "methods"), match) \
        if match.kind == "mapping" else match
