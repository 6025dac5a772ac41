"""Header rewriting in both directions: hop-by-hop fields out, forwarding fields in."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from .config.model import IPNetwork
from .errors import BadRequest

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
})
# The proxy frames the body itself, answers `Expect: 100-continue` itself, and sets one X-Request-ID.
_REFRAMED = frozenset({b"content-length", b"expect", b"x-request-id"})
# What the proxy itself sets or keeps for the upstream: a Connection token naming one is ignored.
_PROXY_SET = frozenset({
    b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"via",
    b"x-request-id", b"content-length",
})
# Dropped from every request: framing and hop-by-hop fields, and `Proxy` (httpoxy: CGI-style servers
# hand it to applications as HTTP_PROXY, their outgoing proxy). X-Forwarded-* is kept from trusted
# proxies only; proxy-* is hop-by-hop.
_DROPPED = _REFRAMED | HOP_BY_HOP | {b"proxy"}
_PREFIXED = (b"x-forwarded-", b"proxy-")
# The proxy's own fields (X-Strangler-Shadow marks a copy): never taken from a client.
_OWN_PREFIX = b"x-strangler-"
_SCREENED = (*_PREFIXED, _OWN_PREFIX)
VIA = b"1.1 strangler"
# RFC 9112 section 3.2, RFC 3986: uri-host [ ":" port ], uri-host a reg-name, IPv4 or [IPv6]. Two
# things the reg-name grammar allows are left out, as no name or address needs them: ',' (X-Forwarded-Host
# repeats Host and is read as a list, so `Host: shop.example.com,evil.test` would put a second host in
# it) and percent-escapes (clients send international names as xn-- labels; upstreams disagree on
# decoding `%2F` in a host).
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+;=]*|\[([0-9A-Fa-f:.]+)\])(?::[0-9]{0,5})?")


def _connection_named(raw_headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for name, value in raw_headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def _is_hop_by_hop(lower_name: bytes, named: frozenset[bytes]) -> bool:
    return lower_name in HOP_BY_HOP or lower_name.startswith(b"proxy-") or lower_name in named


class RequestFraming:
    """How the client framed its body, checked before anything is forwarded."""

    __slots__ = ("content_length", "chunked")

    def __init__(self, content_length: int | None, chunked: bool) -> None:
        self.content_length = content_length
        self.chunked = chunked

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def request_framing(raw_headers: Sequence[tuple[bytes, bytes]]) -> RequestFraming:
    """Refuse ambiguous framing: parsers are lenient, and an upstream may read it otherwise."""
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    for name, value in raw_headers:
        lower = name.lower()
        if lower == b"content-length":
            lengths.append(value.strip())
        elif lower == b"transfer-encoding":
            encodings.append(value.strip().lower())
    if lengths and encodings:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    if encodings:
        if encodings != [b"chunked"]:
            raise BadRequest("unsupported Transfer-Encoding")
        return RequestFraming(None, True)
    if lengths:
        if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
            raise BadRequest("invalid Content-Length")
        return RequestFraming(int(lengths[0]), False)
    return RequestFraming(None, False)


def check_host(raw_headers: Sequence[tuple[bytes, bytes]], http_version: str) -> None:
    """Exactly one Host (none is allowed only before HTTP/1.1), as RFC 9112 section 3.2 requires.

    With two, the proxy would route on one while the upstream may act on the other.
    """
    host: bytes | None = None
    for name, value in raw_headers:
        if len(name) == 4 and name.lower() == b"host":
            if host is not None:
                raise BadRequest("more than one Host header")
            host = value
    if host is None:
        if http_version not in ("1.0", "0.9"):
            raise BadRequest("no Host header")
    elif not is_valid_host(host.strip(b" \t")):
        raise BadRequest("Host header is not a host[:port]")


def is_valid_host(value: bytes) -> bool:
    """True for `host[:port]` as RFC 3986 writes it (a name, an IPv4 or a bracketed IPv6 address)."""
    match = _HOST.fullmatch(value)
    if match is None or not value or value[0] == 0x3A:      # empty, or a port without a host
        return False
    literal = match.group(1)
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return False
    return True


def is_trusted(address: str | None, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def upstream_request_headers(
    raw_headers: Sequence[tuple[bytes, bytes]],
    *,
    client_ip: str | None,
    scheme: str,
    trusted_client: bool,
) -> Headers:
    """The headers the upstream receives, as bytes pairs for the forwarding client.

    Every value must be UTF-8 (or the request is refused), and goes out byte for byte.
    """
    named = _connection_named(raw_headers)
    if named:
        named -= _PROXY_SET
    out: Headers = []
    forwarded_for: bytes | None = None
    proto: bytes | None = None
    host: bytes | None = None
    forwarded_host: bytes | None = None
    via: bytes | None = None
    for name, value in raw_headers:
        if not value.isascii():
            # Checked for every field, dropped ones too: a value the proxy cannot read is refused.
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"header {name.decode('latin-1')} is not valid UTF-8") from None
        lower = name.lower()
        if lower in _DROPPED or lower in named:
            continue
        if lower.startswith(_SCREENED):         # one call for all prefixes: this loop runs for every field
            if trusted_client and lower[2] == 0x66:    # x-forwarded-* ("f"); proxy-* is hop-by-hop, x-strangler-* ours
                if lower == b"x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                elif lower == b"x-forwarded-proto":
                    proto = proto or value
                elif lower == b"x-forwarded-host":
                    if not _is_valid_host_list(value):
                        raise BadRequest("X-Forwarded-Host is not a list of host[:port]")
                    forwarded_host = forwarded_host or value
                else:
                    out.append((name, value))
            continue
        if lower == b"forwarded":
            if trusted_client:
                out.append((name, value))
            continue
        if 0x5F in lower and _spoofs_a_proxy_header(lower):     # b"_" in lower, at a tenth of the cost
            continue
        if lower == b"via":
            via = value if via is None else via + b", " + value
            continue
        if lower == b"host" and host is None:
            host = value
        out.append((name, value))
    if client_ip:
        ip = client_ip.encode("ascii")
        out.append((b"X-Forwarded-For", forwarded_for + b", " + ip if forwarded_for else ip))
    out.append((b"X-Forwarded-Proto", proto or scheme.encode("ascii")))
    if forwarded_host or host:
        out.append((b"X-Forwarded-Host", forwarded_host or host or b""))
    out.append((b"Via", via + b", " + VIA if via else VIA))
    return out


def _spoofs_a_proxy_header(lower_name: bytes) -> bool:
    """True for `x_forwarded_for` and the like: WSGI and CGI servers read `_` as `-`, so the
    application would take it for the field the proxy sets or drops."""
    spelled = lower_name.replace(b"_", b"-")
    return spelled in _PROXY_SET or spelled in _DROPPED or spelled.startswith(_SCREENED)


def _is_valid_host_list(value: bytes) -> bool:
    return all(is_valid_host(part.strip(b" \t")) for part in value.split(b","))


def client_address(peer_ip: str | None, raw_headers: Sequence[tuple[bytes, bytes]], trusted: Sequence[IPNetwork]) -> str | None:
    """The client's address: the peer, or through trusted proxies the last untrusted hop."""
    if not is_trusted(peer_ip, trusted):
        return peer_ip
    hops: list[str] = []
    for name, value in raw_headers:
        if name.lower() == b"x-forwarded-for":
            hops.extend(part.strip() for part in value.decode("latin-1").split(","))
    for hop in reversed(hops):
        if hop and not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops and hops[0] else peer_ip


def client_response_headers(raw_headers: Sequence[tuple[bytes, bytes]], status: int) -> Headers:
    """The upstream's response headers minus hop-by-hop fields and its X-Request-ID; every Set-Cookie kept."""
    named = _connection_named(raw_headers)
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in raw_headers)
    # No body may follow a 204 or 304, and uvicorn would wait for one if told its length.
    drop_length = chunked or status in (204, 304) or status < 200
    out: Headers = []
    for name, value in raw_headers:
        lower = name.lower()
        if _is_hop_by_hop(lower, named) or lower == b"x-request-id" or (drop_length and lower == b"content-length"):
            continue
        out.append((name, value))
    return out


# The scope extension through which the app passes on an upstream's 103 Early Hints: a callable
# (scope, raw header pairs) that the listener provides. uvicorn's HTTP/1.1 protocols have no ASGI
# message for it.
EARLY_HINTS_EXTENSION = "strangler.early_hints"
