"""A route's `shadow:` block: copies of sampled requests to another upstream, and how answers compare."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import sections, values
from .jsonpath import FieldSelector
from .model import SAFE_METHODS, Shadow, ShadowCompare
from .reader import Reader, describe, join
from .source import Node

if TYPE_CHECKING:
    from .routes import ReadRoute

SHADOW_KEYS = ("upstream", "percent", "methods", "allow_writes", "max_concurrent", "max_body", "compare")
COMPARE_KEYS = ("ignore_headers", "ignore_fields", "noise")

# Reads an upstream's name and checks that it is defined (routes.upstream_ref).
UpstreamRef = Callable[[Node, str], "str | None"]


def shadow(r: Reader, node: Node, path: str, upstream_ref: UpstreamRef,
           split: Sequence[tuple[str, float]] | None) -> Shadow | None:
    fields = r.mapping(node, path, SHADOW_KEYS)
    if fields is None:
        return None
    upstream_node = r.require(fields, "upstream", node, path)
    upstream = upstream_ref(upstream_node, join(path, "upstream")) if upstream_node else None
    if upstream is not None and split is not None and [name for name, share in split if share] == [upstream]:
        r.problem(upstream_node, join(path, "upstream"), f"'{upstream}' already takes all of this route's "
                  "traffic: its copies would be compared with its own answers")
    settings: dict[str, object] = {}
    if "percent" in fields:
        settings["percent"] = r.value(fields["percent"], join(path, "percent"), values.percent)
    if "allow_writes" in fields:
        settings["allow_writes"] = r.boolean(fields["allow_writes"], join(path, "allow_writes"))
    if "methods" in fields:
        settings["methods"] = methods = sections.methods(r, fields["methods"], join(path, "methods"))
        writes = sorted((methods or frozenset()) - SAFE_METHODS)
        if writes and settings.get("allow_writes") is not True:
            r.problem(fields["methods"], join(path, "methods"), f"{', '.join(writes)} would be applied twice, by "
                      "the route's upstream and by the shadow: add allow_writes: true to copy writes")
    if "max_concurrent" in fields:
        settings["max_concurrent"] = r.integer(fields["max_concurrent"], join(path, "max_concurrent"), 1)
    if "max_body" in fields:
        settings["max_body_bytes"] = r.value(fields["max_body"], join(path, "max_body"), values.size)
    if "compare" in fields:
        settings["compare"] = _compare(r, fields["compare"], join(path, "compare"))
    if upstream is None or None in settings.values():
        return None
    return Shadow(upstream=upstream, **settings)  # type: ignore[arg-type]


def _compare(r: Reader, node: Node, path: str) -> ShadowCompare | None:
    fields = r.mapping(node, path, COMPARE_KEYS)
    if fields is None:
        return None
    settings: dict[str, object] = {}
    if "ignore_headers" in fields:
        names = _strings(r, fields["ignore_headers"], join(path, "ignore_headers"), values.token)
        settings["ignore_headers"] = None if names is None else frozenset(name.lower() for name in names)
    if "ignore_fields" in fields:
        settings["ignore_fields"] = _strings(r, fields["ignore_fields"], join(path, "ignore_fields"), _json_path)
    if "noise" in fields:
        settings["learn_noise"] = _noise(r, fields["noise"], join(path, "noise"))
    if None in settings.values():
        return None
    return ShadowCompare(**settings)  # type: ignore[arg-type]


def _strings(r: Reader, node: Node, path: str, parse: Callable[[str], str]) -> tuple[str, ...] | None:
    """A list of strings, each checked by `parse`; None when any of them (or the list) is wrong."""
    found = [r.text(item, where, parse) for where, item in r.items(node, path)]
    return tuple(found) if node.kind == "list" and None not in found else None  # type: ignore[arg-type]


def _json_path(text: str) -> str:
    FieldSelector(text)         # its ValueError is the problem's message
    return text


def _noise(r: Reader, node: Node, path: str) -> bool | None:
    # `noise: off` as the contract writes it: plain off is YAML 1.1's false, and here means the same.
    if node.kind == "scalar" and node.type == "bool" and node.value is False:
        return False
    if node.kind == "scalar" and node.type == "str" and node.text in ("off", "learn"):
        return node.text == "learn"
    r.problem(node, path, f"expected off or learn, found {describe(node)}")
    return None


def warnings(r: Reader, read: Sequence[ReadRoute]) -> list[str]:
    """A warning for each route that copies writes: the shadow applies each of them a second time."""
    found = []
    for item in read:
        copy = item.route.shadow
        writes = sorted(copy.methods - SAFE_METHODS) if copy is not None and copy.allow_writes else []
        if writes:
            at = next((value for key, value in item.node.items if key.text == "shadow"), item.node)
            found.append(r.format(at, join(item.path, "shadow"), f"route '{item.route.name}' copies writes "
                                  f"({', '.join(writes)}) to '{copy.upstream}': each is applied there too; make "
                                  "sure it dry-runs requests with X-Strangler-Shadow: 1"))
    return found
