"""Parsers for the value types of the route rules; each raises ValueError with the message."""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

from .model import IPNetwork, Sticky
from .reader import describe
from .source import Node

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|kB|KiB|MB|MiB|GB|GiB)")
_SIZE_UNITS = {"B": 1, "kB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header and cookie names
_HOST = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")
# What a request path may hold literally after normalization (RFC 3986 pchar).
_PCHAR = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _number(node: Node) -> float | None:
    """The value of a plain int or float (booleans are not numbers here)."""
    return float(node.value) if node.kind == "scalar" and node.is_number else None  # type: ignore[arg-type]


def seconds_in(text: str) -> float | None:
    """Seconds in "250ms", "2s", "1m" or "1h" (the command line also takes a plain number); None if not one."""
    found = _DURATION.fullmatch(text.strip())
    return float(found[1]) * _DURATION_UNITS[found[2]] if found else None


def duration(node: Node) -> float:
    """Seconds from 2, 1.5, "250ms", "2s", "1m" or "1h"."""
    seconds = _number(node)
    if seconds is None and node.kind == "scalar" and node.type == "str":
        seconds = seconds_in(node.text)
    if seconds is None:
        raise ValueError(f"expected a duration such as 250ms, 2s or 1m, found {describe(node)}")
    if not (0 < seconds < math.inf):
        raise ValueError(f"expected a duration greater than 0, found {node.text}")
    return seconds


def size(node: Node) -> int:
    """Bytes from 65536, "64KiB", "10MiB", "1GiB", "100kB" or "1MB"."""
    count: float | None = None
    if node.kind == "scalar" and node.type == "int":
        count = float(node.value)  # type: ignore[arg-type]
    elif node.kind == "scalar" and node.type == "str":
        found = _SIZE.fullmatch(node.text.strip())
        if found:
            count = float(found[1]) * _SIZE_UNITS[found[2]]
    if count is None:
        raise ValueError(f"expected a size such as 65536, 64KiB or 10MiB, found {describe(node)}")
    if count < 1:
        raise ValueError(f"expected a size of at least 1 byte, found {node.text}")
    return int(count)


def percent(node: Node) -> float:
    """A percent from 0 to 100, written 20% or 20."""
    value = _number(node)
    if value is None and node.kind == "scalar" and node.type == "str" and node.text.strip().endswith("%"):
        try:
            value = float(node.text.strip()[:-1])
        except ValueError:
            pass
    if value is None:
        raise ValueError(f"expected a percent such as 20% or 12.5, found {describe(node)}")
    if not (0 <= value <= 100):
        raise ValueError(f"expected a percent from 0 to 100, found {node.text}")
    return value


def ratio(node: Node) -> float:
    """A plain number greater than 0, such as 1.5."""
    value = _number(node)
    if value is None:
        raise ValueError(f"expected a number such as 1.5, found {describe(node)}")
    if not (0 < value < math.inf):
        raise ValueError(f"expected a number greater than 0, found {node.text}")
    return value


def name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise ValueError(f"invalid name '{text}': use letters, digits, '_', '.' and '-'")
    return text


def token(text: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"'{text}' is not a valid HTTP token")
    return text


def network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"expected an IP address or CIDR such as 10.0.0.0/8, found '{text}'") from None


def sticky(text: str) -> Sticky:
    kind, sep, key = text.partition(":")
    if not sep and kind in ("cohort", "none", "client-ip"):
        return Sticky(kind=kind)  # type: ignore[arg-type]
    if sep and kind in ("cookie", "header") and _TOKEN.fullmatch(key):
        return Sticky(kind=kind, name=key)  # type: ignore[arg-type]
    raise ValueError(f"expected cohort, none, client-ip, cookie:NAME or header:NAME, found '{text}'")


def host(text: str) -> str:
    value = text.strip().lower()
    if re.search(r":\d*$", value) and not value.endswith("]"):
        raise ValueError(f"host must not include a port, found '{text}'")
    if not _HOST.fullmatch(value):
        raise ValueError(f"expected a host name such as shop.example.com, found '{text}'")
    return value


def url(text: str) -> str:
    """An upstream origin, stored as scheme://host:port with the port explicit."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as err:
        raise ValueError(f"invalid url '{text}': {err}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url must start with http:// or https://, found '{text}'")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not contain a user name or password")
    if not parts.hostname:
        raise ValueError(f"url has no host: '{text}'")
    # The route decides the path: an upstream path would silently prefix every request.
    if parts.path not in ("", "/"):
        raise ValueError(f"url must not have a path ('{parts.path}'): write only scheme://host:port")
    if parts.query or parts.fragment or text.rstrip().endswith(("?", "#")):
        raise ValueError("url must not have a query or fragment")
    hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{hostname}:{port}"


def check_path(text: str) -> None:
    """ValueError unless `text` starts with '/' and holds no '?', '#', backslash or '//'."""
    if not text.startswith("/"):
        raise ValueError(f"path must start with '/', found '{text}'")
    for bad, what in (("?", "'?'"), ("#", "'#'"), ("\\", "a backslash"), ("//", "'//'")):
        if bad in text:
            raise ValueError(f"path must not contain {what}, found '{text}'")


def route_path(text: str) -> str:
    """A path prefix in the form request paths take after normalization."""
    check_path(text)
    segments = [normalize_segment(segment, text) for segment in text.split("/")[1:]]
    if any(segment in (".", "..") for segment in segments):
        raise ValueError(f"path must not contain '.' or '..' segments, found '{text}'")
    path = "/" + "/".join(segments)
    # A prefix matches on segment boundaries anyway, so /api/ and /api are one rule.
    return path.rstrip("/") or "/"


def normalize_segment(segment: str, whole: str) -> str:
    # Requests are matched after their path is normalized (unreserved escapes
    # decoded, other escapes upper-cased, other bytes encoded), so a prefix
    # written any other way would never match.
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "%":
            escape = segment[i + 1 : i + 3]
            if len(escape) != 2 or not all(c in "0123456789abcdefABCDEF" for c in escape):
                raise ValueError(f"path has a broken percent-escape, found '{whole}'")
            decoded = chr(int(escape, 16))
            if decoded in "/\\":
                raise ValueError(f"path must not contain an encoded slash or backslash (%{escape}), found '{whole}'")
            if ord(decoded) < 0x20 or ord(decoded) == 0x7F:
                raise ValueError(f"path must not contain control characters, found '{whole}'")
            out.append(decoded if decoded in _UNRESERVED else f"%{escape.upper()}")
            i += 3
            continue
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise ValueError(f"path must not contain control characters, found {whole!r}")
        out.append(char if char in _PCHAR else "".join(f"%{b:02X}" for b in char.encode("utf-8")))
        i += 1
    return "".join(out)
