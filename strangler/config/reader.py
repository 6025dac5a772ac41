"""Reading typed values out of nodes, collecting every problem instead of stopping."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .source import Node

T = TypeVar("T")


# Every character str.splitlines() breaks on, written as an escape instead.
_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config, where it is and what to do about it."""

    file: str
    line: int   # 1-based
    col: int    # 1-based
    path: str   # YAML path such as routes[1].split; "" for the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        # One problem per line: a value quoted in the message may span lines (a folded scalar).
        return text.translate(_LINE_BREAKS)


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds all of them, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.line, p.col)))
        super().__init__("\n".join(str(p) for p in self.problems))


class Fields(dict):
    """The values of a mapping's known keys, and each key's own node for messages about it."""

    def __init__(self) -> None:
        super().__init__()
        self.key_nodes: dict[str, Node] = {}


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe(node: Node) -> str:
    """What a node holds, for "expected X, found Y" messages."""
    if node.kind == "mapping":
        return "a mapping"
    if node.kind == "list":
        return "a list"
    if node.type == "bool":
        return f"the boolean {str(node.value).lower()}"
    if node.type == "int":
        return f"the integer {node.text}"
    if node.type == "float":
        return f"the number {node.text}"
    if node.type == "null":
        return "nothing (null)"
    if node.type != "str":
        return f"the {node.type} {node.text}"
    return repr(node.text)


class Reader:
    """Walks nodes for one file; every check reports here and reading goes on."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.warnings: list[str] = []     # what is allowed but likely a mistake, formatted as problems are

    def problem(self, at: Node | tuple[int, int], path: str, message: str) -> None:
        line, col = (at.line, at.col) if isinstance(at, Node) else at
        self.problems.append(Problem(self.source, line, col, path, message))

    def format(self, at: Node, path: str, message: str) -> str:
        """A warning, formatted exactly like a problem."""
        return str(Problem(self.source, at.line, at.col, path, message))

    def warn(self, at: Node, path: str, message: str) -> None:
        self.warnings.append(self.format(at, path, message))

    # -- containers -----------------------------------------------------------

    def mapping(
        self, node: Node, path: str, keys: Sequence[str], *, hints: dict[str, str] | None = None
    ) -> Fields | None:
        """The known keys of a mapping with fixed keys; unknown keys are problems."""
        entries = self.entries(node, path, hints=hints)
        if entries is None:
            return None
        found = Fields()
        for name, key, value in entries:
            if name in keys:
                found[name] = value
                found.key_nodes[name] = key
                continue
            guess = (hints or {}).get(name) or next(iter(difflib.get_close_matches(name, keys, n=1)), None)
            tip = f"did you mean '{guess}'?" if guess else "expected one of: " + ", ".join(keys)
            self.problem(key, join(path, name), f"unknown key ({tip})")
        return found

    def entries(
        self, node: Node, path: str, *, hints: dict[str, str] | None = None
    ) -> list[tuple[str, Node, Node]] | None:
        """(name, key node, value node) of a mapping with string keys, checked for duplicates."""
        if not self.expect(node, path, "mapping"):
            return None
        first_line: dict[str, int] = {}
        result = []
        for key, value in node.items:
            name = self.key_name(key, path, hints)
            if name is None:
                continue
            if name in first_line:
                self.problem(key, join(path, name), f"duplicate key '{name}' (first at line {first_line[name]})")
                continue
            first_line[name] = key.line
            result.append((name, key, value))
        return result

    def key_name(self, key: Node, path: str, hints: dict[str, str] | None) -> str | None:
        if key.kind != "scalar":
            self.problem(key, path, f"expected a name as key, found {describe(key)}")
            return None
        if key.type == "bool" and key.plain:
            reads = f"key '{key.text}' reads as the boolean {str(key.value).lower()} in YAML"
            better = (hints or {}).get(key.text.lower())
            self.problem(key, path, f"{reads}; write '{better}'" if better else f"{reads}; quote it")
            return None
        if key.type != "str":
            self.problem(key, path, f"expected a name as key, found {describe(key)}; quote it: \"{key.text}\"")
            return None
        return key.text

    def items(self, node: Node, path: str) -> list[tuple[str, Node]]:
        """(path, node) for each element of a list; a problem if it is not a list."""
        if not self.expect(node, path, "list"):
            return []
        return [(f"{path}[{i}]", item) for i, item in enumerate(node.items)]

    def expect(self, node: Node, path: str, kind: str) -> bool:
        if node.kind == kind:
            return True
        self.problem(node, path, f"expected a {kind}, found {describe(node)}")
        return False

    def require(self, fields: dict[str, Node], key: str, at: Node, path: str) -> Node | None:
        if key not in fields:
            self.problem(at, path, f"missing required key '{key}'")
        return fields.get(key)

    # -- scalars --------------------------------------------------------------

    def string(self, node: Node, path: str) -> str | None:
        if node.kind == "scalar" and node.type == "str":
            return node.text
        if node.kind == "scalar" and node.type == "bool" and node.plain:
            self.problem(node, path, f"reads as the boolean {str(node.value).lower()} in YAML; quote it: \"{node.text}\"")
        elif node.kind == "scalar" and node.type not in ("str", "null") and node.plain:
            self.problem(node, path, f"expected a string, found {describe(node)}; quote it: \"{node.text}\"")
        else:
            self.problem(node, path, f"expected a string, found {describe(node)}")
        return None

    def boolean(self, node: Node, path: str) -> bool | None:
        # YAML 1.1 also reads yes/no/on/off as booleans, YAML 1.2 tools do not:
        # only true and false mean the same to every reader of the file.
        if node.kind == "scalar" and node.type == "bool" and node.text.lower() in ("true", "false"):
            return bool(node.value)
        if node.kind == "scalar" and node.type == "bool":
            self.problem(node, path, f"'{node.text}' is a boolean only in YAML 1.1; write true or false")
        else:
            self.problem(node, path, f"expected true or false, found {describe(node)}")
        return None

    def integer(self, node: Node, path: str, low: int, high: int | None = None, what: str = "an integer") -> int | None:
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        if node.kind != "scalar" or node.type != "int":
            self.problem(node, path, f"expected {what} {span}, found {describe(node)}")
            return None
        value = int(node.value)  # type: ignore[call-overload]
        if value < low or (high is not None and value > high):
            self.problem(node, path, f"expected {what} {span}, found {value}")
            return None
        return value

    def choice(self, node: Node, path: str, options: Sequence[str]) -> str | None:
        text = self.string(node, path)
        if text is not None and text not in options:
            self.problem(node, path, f"expected one of {', '.join(options)}, found '{text}'")
            return None
        return text

    def value(self, node: Node, path: str, parse: Callable[[Node], T]) -> T | None:
        """A value from one of the parsers in `values`; their ValueError is the message."""
        try:
            return parse(node)
        except ValueError as err:
            self.problem(node, path, str(err))
            return None

    def text(self, node: Node, path: str, parse: Callable[[str], T]) -> T | None:
        """A string checked and converted by one of the parsers in `values`."""
        text = self.string(node, path)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as err:
            self.problem(node, path, str(err))
            return None
