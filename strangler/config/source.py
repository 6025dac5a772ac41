"""YAML text -> a tree of positioned nodes; the only module that imports yaml.

The loader works on these nodes rather than on loaded Python values because
nodes keep line and column for every message, show duplicate keys (which
PyYAML's loader silently overwrites) and tell a quoted "yes" from a plain yes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import yaml

_TAG_PREFIX = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG_PREFIX + "merge"

NodeKind = Literal["mapping", "list", "scalar"]


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One YAML node: where it starts (1-based) and what it holds."""

    kind: NodeKind
    line: int
    col: int
    type: str = ""          # scalars: "str", "int", "float", "bool", "null" or another tag's name
    value: object = None    # scalars: the Python value YAML resolves (the text for unknown types)
    text: str = ""          # scalars: as written, without quotes
    plain: bool = False     # scalars: unquoted, so YAML 1.1 chose its type
    items: tuple = ()       # lists: Nodes; mappings: (key Node, value Node) pairs in file order

    @property
    def is_number(self) -> bool:
        return self.type in ("int", "float")


class SourceError(Exception):
    """The text is not YAML the loader can read; one position, one message."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.col = col
        self.message = message


def read_tree(data: bytes | str) -> Node | None:
    """The root node of a single YAML document, or None for an empty one."""
    text = _decode(data) if isinstance(data, bytes) else data
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:      # PyYAML's composer recurses once per level of nesting
        raise SourceError(1, 1, "invalid YAML: nested too deeply") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = err.problem or err.context or "unreadable"
        if err.context and message.startswith("but "):  # "expected a single document ..., but found another"
            message = f"{err.context}, {message}"
        raise SourceError(line, col, f"invalid YAML: {message}") from None
    except yaml.reader.ReaderError as err:
        line, col = _position(text, err.position)
        raise SourceError(line, col, f"invalid YAML: {err.reason} (#x{err.character:04x})") from None
    if root is None:
        return None
    try:
        return _Converter().convert(root)
    except RecursionError:
        raise SourceError(1, 1, "invalid YAML: nested too deeply") from None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SourceError(line, col, "invalid YAML: the file is not UTF-8") from None


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


class _Converter:
    """Turns composed yaml nodes into Nodes, sharing the result for aliases."""

    def __init__(self) -> None:
        self._constructor = yaml.constructor.SafeConstructor()
        # Aliases reuse one composed node; converting each once keeps a
        # "billion laughs" document linear, and `active` catches cycles.
        self._done: dict[int, Node] = {}
        self._active: set[int] = set()

    def convert(self, node: yaml.Node) -> Node:
        key = id(node)
        if key in self._done:
            return self._done[key]
        if key in self._active:
            raise SourceError(*_mark(node), "invalid YAML: an alias refers to itself")
        self._active.add(key)
        if isinstance(node, yaml.MappingNode):
            result = Node("mapping", *_mark(node), items=self._pairs(node))
        elif isinstance(node, yaml.SequenceNode):
            result = Node("list", *_mark(node), items=tuple(self.convert(n) for n in node.value))
        else:
            result = self._scalar(node)
        self._active.discard(key)
        self._done[key] = result
        return result

    def _scalar(self, node: yaml.ScalarNode) -> Node:
        kind = node.tag[len(_TAG_PREFIX):] if node.tag.startswith(_TAG_PREFIX) else node.tag
        value: object = node.value
        if kind in ("str", "int", "float", "bool", "null"):
            try:
                value = self._constructor.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, LookupError, TypeError, OverflowError):
                # `!!int abc`, `!!int 0b`, `!!float .`, `!!bool maybe` make PyYAML's constructors raise
                # ValueError, IndexError or KeyError: keep the text, the loader says what is wrong.
                kind = "str"
        return Node("scalar", *_mark(node), type=kind, value=value, text=node.value, plain=node.style is None)

    def _pairs(self, node: yaml.MappingNode) -> tuple[tuple[Node, Node], ...]:
        own: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key, value in node.value:
            if key.tag != _MERGE_TAG:
                own.append((self.convert(key), self.convert(value)))
                continue
            # `<<: *base` (or a list of them): the base's keys, unless this mapping sets them.
            for base in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                if not isinstance(base, yaml.MappingNode):
                    raise SourceError(*_mark(base), "invalid YAML: '<<' merges only mappings")
                merged.extend(self.convert(base).items)
        seen = {k.text for k, _ in own}
        kept = []
        for key, value in merged:
            if key.text not in seen:  # earlier bases win, as YAML says
                seen.add(key.text)
                kept.append((key, value))
        return tuple(kept + own)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1
