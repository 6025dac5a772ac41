"""Path normalization: the router and the upstream must see the same path."""

from __future__ import annotations

import re

from .errors import BadPath

# Fast path: plain segments, no escapes, no dot segments (with or without `;params`), no empty segments.
_PLAIN = re.compile(rb"(?:/(?!\.{1,2}(?:[/;]|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*/?")
# `..;x` and `.;x`, decoded: Tomcat and Spring drop a segment's `;params` before resolving dot
# segments, so there `/api/orders/..;/admin` is /api/admin; elsewhere it is a plain name.
_DOT_WITH_PARAMS = re.compile(r"\.\.?(?:;|%3B)")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCHAR_LITERAL = _UNRESERVED | frozenset(b"!$&'()*+,;=:@")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Bytes that browsers percent-encode anyway; harmless once encoded.
_ENCODE_QUIETLY = frozenset(b' "<>[]^`{|}') | frozenset(range(0x80, 0x100))


def normalize_path(raw_path: bytes) -> str:
    """Resolve escapes of unreserved bytes, dot segments and repeated slashes.

    Raises BadPath for what cannot be normalized safely: encoded slashes or
    backslashes (upstreams disagree on them), control bytes, broken escapes,
    `..` that climbs above the root, and dot segments with path parameters
    (`..;x`, which upstreams disagree on too).
    """
    if not raw_path.startswith(b"/"):
        raise BadPath("request target must be a path starting with '/'")
    if _PLAIN.fullmatch(raw_path):
        return raw_path.decode("ascii")
    segments: list[str] = []
    trailing_slash = False
    for raw_segment in raw_path.split(b"/")[1:]:
        segment = _decode_segment(raw_segment)
        trailing_slash = segment in ("", ".", "..")
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise BadPath("path climbs above the root with '..'")
            if segments[-1].startswith((";", "%3B")):
                # Tomcat reads `;x` as an empty segment, so there this `..` removes the one before.
                raise BadPath("'..' after a segment of only path parameters")
            segments.pop()
            continue
        if segment[0] == "." and _DOT_WITH_PARAMS.match(segment):
            raise BadPath("dot segment with path parameters ('..;'), which some upstreams read as '..'")
        segments.append(segment)
    if not segments:
        return "/"
    return "/" + "/".join(segments) + ("/" if trailing_slash else "")


def _decode_segment(raw: bytes) -> str:
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # '%'
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise BadPath("broken percent-escape in path")
            value = int(raw[i + 1 : i + 3], 16)
            if value in (0x2F, 0x5C):
                raise BadPath("encoded slash or backslash in path")
            if value < 0x20 or value == 0x7F:
                raise BadPath("encoded control character in path")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%%%02X" % value
            i += 3
            continue
        if byte in _PCHAR_LITERAL:
            out.append(byte)
        elif byte == 0x5C:
            raise BadPath("backslash in path")
        elif byte in _ENCODE_QUIETLY:
            out += b"%%%02X" % byte
        else:
            raise BadPath("control character or '?'/'#' in path")
        i += 1
    return out.decode("ascii")


def strip_prefix(path: str, prefix: str) -> str:
    """The path as the upstream sees it when the route strips its prefix."""
    if prefix == "/":
        return path
    rest = path[len(prefix):]
    return rest if rest.startswith("/") else "/" + rest


def covers(prefix: str, path: str) -> bool:
    """True when `prefix` matches `path` on a segment boundary."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")
