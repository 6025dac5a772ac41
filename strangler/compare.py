"""Comparing two answers to one request: status, headers, and the body (JSON as data).

A difference is named by a field: `status`, `headers.content-type`, a generalised JSON path
such as `$.orders[*].total_cents` (every index is `[*]`, so one field counts once however many
elements differ), or `body` for a body that is not JSON. Content-Encoding is undone on both sides
first, so that gzip against identity is no difference.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

from .config.jsonpath import ConcretePath, FieldSelector
from .config.model import ShadowCompare
from .headers import HOP_BY_HOP

MAX_DIFFERENCES = 100          # fields reported per comparison; the rest are left out
SHOWN_CHARS = 120              # of each example value
# Framing and encoding differ legitimately between two servers; the body's comparison covers them.
_NEVER_COMPARED = HOP_BY_HOP | {b"content-encoding"}
_SENSITIVE = frozenset({b"authorization", b"cookie", b"set-cookie", b"proxy-authorization"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MISSING: Any = object()
_NUMBERS = (int, float)


class BodyTooLarge(Exception):
    """A body that decodes to more than the comparison's limit."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]     # raw pairs, as the upstream sent them
    body: bytes                            # as it came, still encoded


@dataclass(frozen=True, slots=True)
class Difference:
    field: str
    primary: str        # an example of each side's value, shown as JSON text (cut short)
    shadow: str


class Comparer:
    """Compares answers under one route's `compare:` settings."""

    __slots__ = ("_ignore_headers", "_selectors", "_limit")

    def __init__(self, settings: ShadowCompare, max_body_bytes: int) -> None:
        self._ignore_headers = frozenset(name.encode("latin-1") for name in settings.ignore_headers) | _NEVER_COMPARED
        self._selectors = tuple(FieldSelector(text) for text in settings.ignore_fields)
        self._limit = max_body_bytes

    def differences(self, primary: Answer, shadow: Answer, *, bodiless: bool = False) -> list[Difference]:
        """Every field that differs, in the order found; BodyTooLarge if a body decodes past the limit."""
        found: dict[str, Difference] = {}
        if primary.status != shadow.status:
            found["status"] = Difference("status", str(primary.status), str(shadow.status))
        self._compare_headers(primary.headers, shadow.headers, found)
        if not bodiless:
            self._compare_bodies(primary, shadow, found)
        return list(found.values())

    def _compare_headers(self, primary: list[tuple[bytes, bytes]], shadow: list[tuple[bytes, bytes]],
                         found: dict[str, Difference]) -> None:
        ours, theirs = self._header_values(primary), self._header_values(shadow)
        for name in [*ours, *(name for name in theirs if name not in ours)]:
            a, b = ours.get(name), theirs.get(name)
            if a != b:
                field = "headers." + name.decode("latin-1")
                if name in _SENSITIVE:
                    found[field] = Difference(field, "(removed)", "(removed)")
                else:
                    found[field] = Difference(field, _show_values(a), _show_values(b))

    def _header_values(self, headers: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
        values: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            lower = name.lower()
            if lower not in self._ignore_headers and not lower.startswith(b"proxy-"):
                values.setdefault(lower, []).append(value.strip())
        for found in values.values():
            found.sort()
        return values

    def _compare_bodies(self, primary: Answer, shadow: Answer, found: dict[str, Difference]) -> None:
        a, b = decoded_body(primary, self._limit), decoded_body(shadow, self._limit)
        if a == b:
            return
        if a is None or b is None:
            # An encoding that cannot be undone here (br, zstd): the raw bytes are all there is.
            if primary.body != shadow.body:
                found["body"] = Difference("body", _describe_bytes(primary.body), _describe_bytes(shadow.body))
            return
        if _is_json(primary.headers) or _is_json(shadow.headers):
            try:
                ours, theirs = json.loads(a), json.loads(b)
            except (ValueError, RecursionError):
                pass
            else:
                self._compare_json(ours, theirs, found)
                return
        found["body"] = Difference("body", *_first_difference(a, b))

    def _compare_json(self, ours: Any, theirs: Any, found: dict[str, Difference]) -> None:
        ignored: set[ConcretePath] = set()
        for selector in self._selectors:
            ignored |= selector.select(ours)
            ignored |= selector.select(theirs)
        try:
            _walk(ours, theirs, (), found, ignored)
        except _Enough:
            pass
        except RecursionError:
            found.setdefault("$", Difference("$", "(nested too deeply to compare)", "(nested too deeply to compare)"))


class _Enough(Exception):
    """MAX_DIFFERENCES found: the rest of the document is not walked."""


def _walk(a: Any, b: Any, path: ConcretePath, found: dict[str, Difference], ignored: set[ConcretePath]) -> None:
    if ignored and path in ignored:
        return
    kind_a, kind_b = type(a), type(b)
    if kind_a is dict and kind_b is dict:
        for key in a:
            _walk(a[key], b.get(key, _MISSING), (*path, key), found, ignored)
        for key in b:
            if key not in a:
                _walk(_MISSING, b[key], (*path, key), found, ignored)
        return
    if kind_a is list and kind_b is list:
        for index in range(max(len(a), len(b))):
            _walk(a[index] if index < len(a) else _MISSING, b[index] if index < len(b) else _MISSING,
                  (*path, index), found, ignored)
        return
    if _same_value(a, b):
        return
    field = field_name(path)
    if field not in found:
        found[field] = Difference(field, _show(a), _show(b))
        if len(found) >= MAX_DIFFERENCES:
            raise _Enough()


def _same_value(a: Any, b: Any) -> bool:
    """JSON scalars as data: 1 and 1.0 are one number; true is not 1."""
    kind_a, kind_b = type(a), type(b)
    if kind_a is bool or kind_b is bool:
        return a is b
    if kind_a in _NUMBERS and kind_b in _NUMBERS:
        return a == b or (math.isnan(a) and math.isnan(b))
    return kind_a is kind_b and a == b


def field_name(path: ConcretePath) -> str:
    """`$.orders[*].total_cents` for ("orders", 3, "total_cents"): every index generalised."""
    parts = ["$"]
    for step in path:
        if type(step) is int:
            parts.append("[*]")
        elif _IDENTIFIER.fullmatch(step):
            parts.append("." + step)
        else:
            parts.append("[" + json.dumps(step, ensure_ascii=False) + "]")
    return "".join(parts)


def decoded_body(answer: Answer, limit: int) -> bytes | None:
    """The body with its Content-Encoding undone; None for an encoding not known here."""
    codings = [token.strip().lower() for name, value in answer.headers if name.lower() == b"content-encoding"
               for token in value.split(b",") if token.strip()]
    body = answer.body
    for coding in reversed(codings):
        if coding == b"identity":
            continue
        if coding in (b"gzip", b"x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif coding == b"deflate":
            try:
                body = _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:      # deflate as many servers send it: without the zlib wrapper
                body = _inflate(body, -zlib.MAX_WBITS, limit)
        else:
            return None
    return body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"the body decodes to more than {limit} bytes")
    return out


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(missing)"
    return _cut(json.dumps(value, ensure_ascii=False))


def _show_values(values: list[bytes] | None) -> str:
    if values is None:
        return "(missing)"
    return _cut(", ".join(value.decode("latin-1") for value in values))


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def _describe_bytes(body: bytes) -> str:
    return f"{len(body)} bytes"


def _first_difference(a: bytes, b: bytes) -> tuple[str, str]:
    at, end = 0, min(len(a), len(b))
    while at < end and a[at:at + 4096] == b[at:at + 4096]:      # a block at a time, then byte by byte
        at += 4096
    while at < end and a[at] == b[at]:
        at += 1
    return tuple(f"{len(side)} bytes, from byte {at}: " + _cut(repr(side[at:at + 40])[2:-1])  # type: ignore[return-value]
                 for side in (a, b))
