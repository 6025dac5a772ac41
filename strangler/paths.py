"""Path normalization: the router and the upstream must see the same path.

Encoded slashes (`%2F`) are refused (400) unless a route keeps them (`paths.encoded_slash:
keep`): such a path is matched with `%2F` inside its segment (the segment boundaries are the
real slashes only) and forwarded with the client's own escapes (PathForms).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config.model import Route
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
    return _resolve(raw_path, keep_slash=False).matched


@dataclass(frozen=True, slots=True)
class PathForms:
    """A path with encoded slashes kept: what routes match, and the client's own bytes to forward."""

    matched: str                       # normalized; `%2F` stays inside its segment
    sent: tuple[str, ...] | None       # each segment left after resolution, escapes as the client wrote
                                       # them; None: a plain path, sent as matched
    trailing_slash: bool

    @property
    def has_encoded_slash(self) -> bool:
        return "%2F" in self.matched

    def forwarded(self, strip: str | None = None) -> str:
        """The path for the upstream, without the route's prefix `strip` (whose segments hold no `%2F`)."""
        sent = self.sent
        if sent is None:
            return self.matched if strip is None else strip_prefix(self.matched, strip)
        if strip is not None and strip != "/":
            sent = sent[strip.count("/"):]
        if not sent:
            return "/"
        return "/" + "/".join(sent) + ("/" if self.trailing_slash else "")


def path_forms(raw_path: bytes) -> PathForms:
    """Normalize as normalize_path does, keeping encoded slashes (for routes with encoded_slash: keep).

    A segment that holds a dot segment between its encoded slashes (`..%2F`, `%2e%2e%2Fx`) is
    refused: an upstream that decodes `%2F` would climb out of the route's prefix with it.
    """
    if not raw_path.startswith(b"/"):
        raise BadPath("request target must be a path starting with '/'")
    if _PLAIN.fullmatch(raw_path):
        return PathForms(raw_path.decode("ascii"), None, False)
    return _resolve(raw_path, keep_slash=True)


def forwarded_path(path: str, forms: PathForms | None, route: Route) -> str:
    """What the upstream receives for the matched `path` (see strip_prefix and PathForms)."""
    prefix = route.match.path if route.strip_prefix else None
    if forms is not None:
        if route.encoded_slash == "keep":
            return forms.forwarded(prefix)
        if forms.has_encoded_slash:
            raise BadPath("encoded slash in path (this route's paths.encoded_slash is reject)", route=route.name)
    return path if prefix is None else strip_prefix(path, prefix)


def _resolve(raw_path: bytes, *, keep_slash: bool) -> PathForms:
    segments: list[str] = []
    sent: list[str] = []
    trailing_slash = False
    for raw_segment in raw_path.split(b"/")[1:]:
        segment, as_sent = _decode_segment(raw_segment, keep_slash)
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
            sent.pop()
            continue
        if segment[0] == "." and _DOT_WITH_PARAMS.match(segment):
            raise BadPath("dot segment with path parameters ('..;'), which some upstreams read as '..'")
        if keep_slash and "%2F" in segment and any(part in (".", "..") for part in segment.split("%2F")):
            raise BadPath("dot segment behind an encoded slash ('..%2F'), which upstreams that decode it resolve")
        segments.append(segment)
        sent.append(as_sent)
    if not segments:
        return PathForms("/", (), False)
    return PathForms("/" + "/".join(segments) + ("/" if trailing_slash else ""), tuple(sent), trailing_slash)


def _decode_segment(raw: bytes, keep_slash: bool) -> tuple[str, str]:
    """The segment normalized, and as the client sent it (bytes that are never literal in a URL encoded)."""
    out = bytearray()
    sent = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # '%'
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise BadPath("broken percent-escape in path")
            value = int(raw[i + 1 : i + 3], 16)
            if value == 0x5C or (value == 0x2F and not keep_slash):
                raise BadPath("encoded slash or backslash in path")
            if value < 0x20 or value == 0x7F:
                raise BadPath("encoded control character in path")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%%%02X" % value
            sent += raw[i : i + 3]
            i += 3
            continue
        if byte in _PCHAR_LITERAL:
            out.append(byte)
            sent.append(byte)
        elif byte == 0x5C:
            raise BadPath("backslash in path")
        elif byte in _ENCODE_QUIETLY:
            out += b"%%%02X" % byte
            sent += b"%%%02X" % byte
        else:
            raise BadPath("control character or '?'/'#' in path")
        i += 1
    return out.decode("ascii"), sent.decode("ascii")


def strip_prefix(path: str, prefix: str) -> str:
    """The path as the upstream sees it when the route strips its prefix."""
    if prefix == "/":
        return path
    rest = path[len(prefix):]
    return rest if rest.startswith("/") else "/" + rest


def covers(prefix: str, path: str) -> bool:
    """True when `prefix` matches `path` on a segment boundary."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")
