"""Path templates: `{name}` matches one segment of a request's path, `{name:path}` the rest of it.

A route's `match.path` may be a template; what it captures fills the `{name}` slots of a
composite route's part targets (`/api/orders/{id}/`, `/api/payments/?order_id={id}`).
Captures are kept as the normalized request path has them (escapes of reserved bytes
still encoded) and encoded again, whole, when a target is filled: a value stays inside
its slot, whatever `/`, `?`, `#`, `%` or `;` it holds, and a value made only of dots is
refused, so no capture can climb out of the segment it fills.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ..errors import BadPath
from .values import check_path, normalize_segment

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(r"\{(" + _NAME + r")(?::([^{}]*))?\}")
_SLOT = re.compile(r"\{(" + _NAME + r")\}")
_PCHAR = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"
_QUERY_CHARS = frozenset(_PCHAR + "/?%")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class Variable:
    """A `{name}` segment of a template, or `{name:path}` (`rest`) for the rest of the path."""

    name: str
    rest: bool = False


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A `match.path` with variables; `text` as normalized, the form users see in check and /routes."""

    text: str
    prefix: str                                   # the literal segments before the first variable
    segments: tuple[str | Variable, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(segment.name for segment in self.segments if type(segment) is Variable)

    def match(self, path: str) -> dict[str, str] | None:
        """The captures when the normalized `path` fits the template whole (a trailing slash allowed), else None."""
        if path.endswith("/") and path != "/":
            path = path[:-1]
        parts = path.split("/")
        del parts[0]
        segments = self.segments
        captures: dict[str, str] = {}
        for index, segment in enumerate(segments):
            if index >= len(parts):
                return None
            if type(segment) is str:
                if parts[index] != segment:
                    return None
            elif segment.rest:
                captures[segment.name] = "/".join(parts[index:])
                return captures
            elif parts[index]:
                captures[segment.name] = parts[index]
            else:
                return None
        return captures if len(parts) == len(segments) else None


def parse_path_template(text: str) -> PathTemplate:
    """A template from `match.path`; ValueError says what is wrong with it."""
    check_path(text)
    segments: list[str | Variable] = []
    for raw in text.rstrip("/").split("/")[1:]:
        if segments and type(segments[-1]) is Variable and segments[-1].rest:
            raise ValueError(f"{{{segments[-1].name}:path}} takes the rest of the path: it must come last in '{text}'")
        variable = _VARIABLE.fullmatch(raw)
        if variable is None:
            if "{" in raw or "}" in raw:
                raise ValueError("a template variable must be a whole segment, {name} or {name:path}: "
                                 f"found '{raw}'")
            segment = normalize_segment(raw, text)
            if segment in (".", ".."):
                raise ValueError(f"path must not contain '.' or '..' segments, found '{text}'")
            segments.append(segment)
            continue
        name, kind = variable.groups()
        if kind not in (None, "path"):
            raise ValueError(f"unknown kind '{kind}' in '{raw}': {{{name}}} matches one segment, "
                             f"{{{name}:path}} the rest of the path")
        if any(type(seen) is Variable and seen.name == name for seen in segments):
            raise ValueError(f"variable '{name}' appears twice in '{text}'")
        segments.append(Variable(name, rest=kind == "path"))
    literal = []
    for segment in segments:
        if type(segment) is Variable:
            break
        literal.append(segment)
    written = "/" + "/".join(segment if type(segment) is str else
                             "{" + segment.name + (":path}" if segment.rest else "}") for segment in segments)
    return PathTemplate(text=written, prefix="/" + "/".join(literal), segments=tuple(segments))


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a capture goes in a part's target: in its path, or in its query."""

    name: str
    in_query: bool


@dataclass(frozen=True, slots=True)
class PartTarget:
    """A composite part's path and query, with `{name}` slots for the route's captures."""

    text: str
    pieces: tuple[str | Slot, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(piece.name for piece in self.pieces if type(piece) is Slot)

    def fill(self, captures: Mapping[str, str]) -> str:
        """The target with every slot filled, each value encoded whole (BadPath for a value of only dots)."""
        return "".join(piece if type(piece) is str else _encode(captures[piece.name], piece.in_query)
                       for piece in self.pieces)


def parse_part_target(text: str) -> PartTarget:
    """A part's `path`, `/path/{name}/?key={name}`; ValueError says what is wrong with it."""
    path, mark, query = text.partition("?")
    check_path(path)
    if "#" in query:
        raise ValueError(f"path must not contain '#', found '{text}'")
    pieces: list[str | Slot] = []
    for segment in path.split("/")[1:]:
        pieces.append("/")
        literal_only = True
        for piece in _split_slots(segment, text):
            if type(piece) is Slot:
                literal_only = False
                pieces.append(Slot(piece.name, in_query=False))
            else:
                pieces.append(normalize_segment(piece, text))
        if literal_only and segment in (".", ".."):
            raise ValueError(f"path must not contain '.' or '..' segments, found '{text}'")
    if mark:
        pieces.append("?")
        for piece in _split_slots(query, text):
            if type(piece) is Slot:
                pieces.append(Slot(piece.name, in_query=True))
                continue
            odd = next((char for char in piece if char not in _QUERY_CHARS), None)
            if odd is not None or _ESCAPE.search(piece):
                what = f"'{odd}'" if odd is not None else "a broken percent-escape"
                raise ValueError(f"query has {what}; write it percent-encoded, found '{text}'")
            pieces.append(piece)
    return PartTarget(text=text, pieces=tuple(_joined(pieces)))


def _split_slots(text: str, whole: str) -> list[str | Slot]:
    found: list[str | Slot] = []
    position = 0
    for slot in _SLOT.finditer(text):
        if slot.start() > position:
            found.append(text[position:slot.start()])
        found.append(Slot(slot.group(1), in_query=False))
        position = slot.end()
    if position < len(text):
        found.append(text[position:])
    for piece in found:
        if type(piece) is str and ("{" in piece or "}" in piece):
            raise ValueError(f"'{{' and '}}' only enclose a variable name such as {{id}}, found '{whole}'")
    return found


def _joined(pieces: list[str | Slot]) -> list[str | Slot]:
    """Adjacent literal pieces as one string, so that filling joins as few pieces as it can."""
    out: list[str | Slot] = []
    for piece in pieces:
        if type(piece) is str and out and type(out[-1]) is str:
            out[-1] += piece
        elif piece != "":
            out.append(piece)
    return out


def decoded(capture: str) -> str:
    """A capture as a value (what `strangler explain` shows): its escapes decoded."""
    return unquote(capture, errors="surrogateescape")


def _encode(capture: str, in_query: bool) -> str:
    # Every byte but the unreserved ones is escaped, '/' included: a value fills its slot and
    # nothing else. A {name:path} capture keeps its own segments in a path, not in a query.
    if in_query:
        return quote(decoded(capture), safe="", errors="surrogateescape")
    segments = []
    for segment in capture.split("/"):
        value = decoded(segment)
        if not value.strip("."):
            raise BadPath(f"a captured segment of only dots ('{value}') cannot go into a path")
        segments.append(quote(value, safe="", errors="surrogateescape"))
    return "/".join(segments)
