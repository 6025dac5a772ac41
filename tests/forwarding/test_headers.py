"""Header rewriting both ways, and request framing checks."""

from __future__ import annotations

import ipaddress

import pytest

from strangler.errors import BadRequest
from strangler.headers import (
    check_host, client_address, client_response_headers, is_trusted, is_valid_host, request_framing,
    upstream_request_headers,
)

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


def _raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def _up(*pairs: tuple[str, str], client_ip: str | None = "10.0.0.5", scheme: str = "http",
        trusted: bool = False) -> list[tuple[str, str]]:
    out = upstream_request_headers(_raw(*pairs), client_ip=client_ip, scheme=scheme, trusted_client=trusted)
    assert all(isinstance(name, bytes) and isinstance(value, bytes) for name, value in out)
    return [(name.decode("latin-1"), value.decode("utf-8")) for name, value in out]


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


def _names(headers: list[tuple[str, str]] | list[tuple[bytes, bytes]]) -> set[str]:
    return {(k.decode("latin-1") if isinstance(k, bytes) else k).lower() for k, _ in headers}


HOP_BY_HOP_REQUEST = (
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "h2c"),
    ("Proxy-Connection", "keep-alive"),
    ("Proxy-Authorization", "Basic c2VjcmV0"),
    ("Proxy-Authenticate", "Basic"),
)


def test_hop_by_hop_request_headers_are_removed() -> None:
    out = _up(("Host", "shop.example.com"), *HOP_BY_HOP_REQUEST, ("Accept", "text/html"))
    names = _names(out)
    for name, _ in HOP_BY_HOP_REQUEST:
        assert name.lower() not in names
    assert _values(out, "accept") == ["text/html"]
    assert _values(out, "host") == ["shop.example.com"]


def test_hop_by_hop_response_headers_are_removed() -> None:
    out = client_response_headers(_raw(
        ("Content-Type", "text/plain"), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum"), ("Upgrade", "h2c"),
        ("Proxy-Authenticate", "Basic"), ("Proxy-Connection", "close"), ("TE", "trailers"),
    ), 200)
    assert out == [(b"Content-Type", b"text/plain")]


def test_headers_named_in_connection_are_removed_from_requests() -> None:
    out = _up(("Connection", "close, X-Secret , x-other"), ("X-Secret", "1"), ("X-Other", "2"),
              ("Connection", "X-Third"), ("X-Third", "3"), ("X-Kept", "4"))
    names = _names(out)
    assert not names & {"x-secret", "x-other", "x-third", "connection"}
    assert _values(out, "x-kept") == ["4"]


def test_headers_named_in_connection_are_removed_from_responses() -> None:
    out = client_response_headers(_raw(
        ("Connection", "X-Internal-Debug"), ("X-Internal-Debug", "stack trace"), ("X-Kept", "1"),
    ), 200)
    assert out == [(b"X-Kept", b"1")]


@pytest.mark.parametrize("named", ["X-Forwarded-For", "x-forwarded-for, X-Forwarded-Proto, X-Forwarded-Host, Via"])
def test_client_cannot_delete_the_proxys_forwarding_headers_via_connection(named: str) -> None:
    out = _up(("Host", "shop.example.com"), ("Connection", named), client_ip="10.0.0.5")
    assert _values(out, "x-forwarded-for") == ["10.0.0.5"]
    assert _values(out, "x-forwarded-proto") == ["http"]
    assert _values(out, "x-forwarded-host") == ["shop.example.com"]
    assert _values(out, "via") == ["1.1 strangler"]


@pytest.mark.parametrize("named", [
    "Host", "close, host", "HOST, Via, X-Request-ID, Content-Length, Forwarded",
    "Host, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host",
])
def test_a_connection_token_cannot_remove_host_or_what_the_proxy_sets(named: str) -> None:
    # With Host dropped, the forwarding client put the upstream's own address in its place, after
    # the request had been routed on the client's Host, and X-Forwarded-Host went missing.
    out = _up(("Host", "beta.example.com"), ("Connection", named), ("Via", "1.0 fred"), ("X-Kept", "1"),
              ("Content-Length", "5"), ("X-Request-ID", "client"), client_ip="10.0.0.5")
    assert _values(out, "host") == ["beta.example.com"]
    assert _values(out, "x-forwarded-host") == ["beta.example.com"]
    assert _values(out, "x-forwarded-for") == ["10.0.0.5"]
    assert _values(out, "x-forwarded-proto") == ["http"]
    assert _values(out, "via") == ["1.0 fred, 1.1 strangler"]
    assert _values(out, "x-kept") == ["1"]
    # Framing and the request id are the proxy's own (pipeline.py adds them): the client's never pass.
    assert not _names(out) & {"connection", "content-length", "x-request-id"}


def test_a_connection_token_still_removes_the_fields_it_names_that_the_proxy_does_not_set() -> None:
    out = _up(("Host", "shop.example.com"), ("Connection", "Host, X-Secret"), ("X-Secret", "1"))
    assert "x-secret" not in _names(out)
    assert _values(out, "host") == ["shop.example.com"]


@pytest.mark.parametrize("name", [
    "X_Forwarded_For", "x_forwarded_for", "X-Forwarded_For", "X_Forwarded-For", "X_Forwarded_Proto",
    "X_Forwarded_Host", "X_Forwarded_Port", "X_Request_ID", "Content_Length", "Transfer_Encoding",
    "Proxy_Authorization", "Keep_Alive", "X_Strangler_Route", "X_Strangler_Shadow",
])
def test_underscore_spellings_of_what_the_proxy_sets_or_drops_are_dropped(name: str) -> None:
    # WSGI and CGI servers map X_Forwarded_For and X-Forwarded-For both to HTTP_X_FORWARDED_FOR.
    for trusted in (False, True):
        out = _up(("Host", "shop.example.com"), (name, "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9"),
                  client_ip="127.0.0.1", trusted=trusted)
        assert name.lower() not in _names(out)
        assert not any("6.6.6.6" in value for _, value in out)


def test_other_underscore_names_pass() -> None:
    out = _up(("Host", "shop.example.com"), ("X_Custom_Header", "1"), ("my_session", "2"))
    assert _values(out, "x_custom_header") == ["1"]
    assert _values(out, "my_session") == ["2"]


@pytest.mark.parametrize("trusted", [False, True])
def test_the_proxy_header_never_reaches_the_upstream(trusted: bool) -> None:
    # httpoxy: CGI-style servers hand `Proxy` to applications as HTTP_PROXY, an outgoing proxy setting.
    out = _up(("Host", "shop.example.com"), ("Proxy", "http://evil.test:3128"), client_ip="127.0.0.1",
              trusted=trusted)
    assert "proxy" not in _names(out)


def test_other_x_forwarded_fields_of_an_untrusted_client_are_dropped_and_of_a_trusted_one_kept() -> None:
    sent = (("Host", "shop.example.com"), ("X-Forwarded-Port", "443"), ("X-Forwarded-Prefix", "/evil"))
    assert not _names(_up(*sent, trusted=False)) & {"x-forwarded-port", "x-forwarded-prefix"}
    out = _up(*sent, client_ip="127.0.0.1", trusted=True)
    assert _values(out, "x-forwarded-port") == ["443"]
    assert _values(out, "x-forwarded-prefix") == ["/evil"]


@pytest.mark.parametrize("value", ["www.example.com", "www.example.com:8443", "a.test, b.test", "[::1]:80"])
def test_a_trusted_x_forwarded_host_that_is_a_host_is_kept(value: str) -> None:
    out = _up(("Host", "shop.example.com"), ("X-Forwarded-Host", value), client_ip="127.0.0.1", trusted=True)
    assert _values(out, "x-forwarded-host") == [value]


@pytest.mark.parametrize("value", ["a/evil", "a b", "", "a.test,", "a@b"])
def test_a_trusted_x_forwarded_host_that_is_not_a_host_is_refused(value: str) -> None:
    with pytest.raises(BadRequest):
        _up(("Host", "shop.example.com"), ("X-Forwarded-Host", value), client_ip="127.0.0.1", trusted=True)
    # From an untrusted client it is replaced by Host anyway.
    out = _up(("Host", "shop.example.com"), ("X-Forwarded-Host", value))
    assert _values(out, "x-forwarded-host") == ["shop.example.com"]


def test_untrusted_forwarding_headers_are_replaced_not_appended() -> None:
    out = _up(
        ("Host", "shop.example.com"),
        ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "7.7.7.7, 8.8.8.8"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "admin.internal"),
        ("Forwarded", "for=6.6.6.6;proto=https"),
        client_ip="10.0.0.5", trusted=False,
    )
    assert _values(out, "x-forwarded-for") == ["10.0.0.5"]
    assert _values(out, "x-forwarded-proto") == ["http"]
    assert _values(out, "x-forwarded-host") == ["shop.example.com"]
    assert _values(out, "forwarded") == []


def test_trusted_forwarding_headers_are_appended_to() -> None:
    out = _up(
        ("Host", "shop.example.com"),
        ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "198.51.100.2"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "www.example.com"),
        client_ip="127.0.0.1", trusted=True,
    )
    assert _values(out, "x-forwarded-for") == ["203.0.113.9, 198.51.100.2, 127.0.0.1"]
    assert _values(out, "x-forwarded-proto") == ["https"]
    assert _values(out, "x-forwarded-host") == ["www.example.com"]


def test_x_forwarded_proto_defaults_to_the_scheme_the_proxy_saw() -> None:
    assert _values(_up(scheme="https"), "x-forwarded-proto") == ["https"]


def test_via_is_appended() -> None:
    assert _values(_up(), "via") == ["1.1 strangler"]
    out = _up(("Via", "1.0 fred"), ("Via", "1.1 p.example.net"))
    assert _values(out, "via") == ["1.0 fred, 1.1 p.example.net, 1.1 strangler"]


def test_host_is_kept_as_the_client_sent_it() -> None:
    out = _up(("Host", "Shop.Example.com:8443"))
    assert _values(out, "host") == ["Shop.Example.com:8443"]
    assert _values(out, "x-forwarded-host") == ["Shop.Example.com:8443"]


def test_client_framing_headers_are_dropped_for_the_client_library_to_reframe() -> None:
    out = _up(("Content-Length", "5"), ("Expect", "100-continue"), ("Content-Type", "text/plain"))
    assert "content-length" not in _names(out)
    assert "expect" not in _names(out)
    assert _values(out, "content-type") == ["text/plain"]


def test_repeated_request_headers_keep_their_order_and_values() -> None:
    out = _up(("Cookie", "a=1"), ("X-Tag", "one"), ("Cookie", "b=2"), ("X-Tag", "two"))
    assert _values(out, "cookie") == ["a=1", "b=2"]
    assert _values(out, "x-tag") == ["one", "two"]


def test_is_trusted_and_client_address() -> None:
    assert is_trusted("127.0.0.1", LOOPBACK)
    assert not is_trusted("127.0.0.2", LOOPBACK)
    assert not is_trusted("127.0.0.1", ())
    assert not is_trusted("not-an-ip", LOOPBACK)
    assert not is_trusted(None, LOOPBACK)
    xff = _raw(("X-Forwarded-For", "203.0.113.9, 127.0.0.1"))
    assert client_address("127.0.0.1", xff, LOOPBACK) == "203.0.113.9"
    assert client_address("10.0.0.1", xff, LOOPBACK) == "10.0.0.1"      # untrusted peer: its own address


# --- Host -------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    "shop.example.com", "Shop.Example.COM:8443", "shop.example.com.", "shop.example.com.:8000", "localhost",
    "127.0.0.1", "127.0.0.1:8000", "[::1]", "[::1]:8000", "[2001:db8::1]", "[::ffff:192.0.2.1]:80",
    "xn--bcher-kva.example", "under_score.test", "a-b~c", "host:",
])
def test_check_host_accepts_host_and_optional_port(host: str) -> None:
    assert is_valid_host(host.encode())
    check_host(_raw(("Host", host)), "1.1")


@pytest.mark.parametrize("host", [
    "", " ", "a/evil", "a b", "a\\b", "a@evil.test", "user:pw@a", "a?b", "a#b", "a,evil.test", "a%2Fb",
    'a"b', "a<b", ":80", "a:80:80", "a:8o", "a:123456", "[::1", "::1", "[::1]x", "[not-v6]", "[v1.x]",
    "[::1]:8o", "a\tb", "caf\u00e9.test",
])
def test_check_host_refuses_what_is_not_host_and_port(host: str) -> None:
    with pytest.raises(BadRequest):
        check_host([(b"Host", host.encode("utf-8"))], "1.1")
    assert not is_valid_host(host.encode("utf-8"))


def test_check_host_ignores_whitespace_around_the_value() -> None:
    # llhttp strips whitespace before a value, not after it.
    check_host([(b"Host", b"shop.example.com \t")], "1.1")


def test_check_host_wants_exactly_one_host_except_before_http_1_1() -> None:
    with pytest.raises(BadRequest):
        check_host(_raw(("Host", "a.test"), ("host", "a.test")), "1.1")
    with pytest.raises(BadRequest):
        check_host(_raw(("X-Host", "a.test")), "1.1")
    check_host(_raw(("X-Host", "a.test")), "1.0")
    with pytest.raises(BadRequest):
        check_host(_raw(("Host", "a/b")), "1.0")


# --- request framing --------------------------------------------------------------------------

def test_framing_plain_content_length_and_chunked() -> None:
    assert request_framing(_raw(("Content-Length", "42"))).content_length == 42
    assert not request_framing(_raw(("Content-Length", "0"))).has_body
    chunked = request_framing(_raw(("Transfer-Encoding", "chunked")))
    assert chunked.chunked and chunked.content_length is None and chunked.has_body
    assert request_framing(_raw(("Transfer-Encoding", "Chunked"))).chunked
    assert not request_framing(_raw()).has_body


def test_framing_rejects_content_length_with_transfer_encoding() -> None:
    with pytest.raises(BadRequest):
        request_framing(_raw(("Content-Length", "5"), ("Transfer-Encoding", "chunked")))
    with pytest.raises(BadRequest):
        request_framing(_raw(("Transfer-Encoding", "chunked"), ("content-length", "0")))


@pytest.mark.parametrize("lengths", [
    ["5", "5"], ["5", "6"], ["5, 5"], ["-1"], ["+5"], ["abc"], ["1 2"], ["0x10"], ["1.0"], [""],
    ["99999999999999999999"],
])
def test_framing_rejects_duplicate_or_invalid_content_length(lengths: list[str]) -> None:
    with pytest.raises(BadRequest):
        request_framing(_raw(*(("Content-Length", value) for value in lengths)))


@pytest.mark.parametrize("encodings", [
    ["identity"], ["xchunked"], [",chunked"], ["chunked, chunked"], ["gzip, chunked"], ["gzip"],
    ["chunked", "chunked"], ["chunked;q=1"], [""],
])
def test_framing_rejects_transfer_encoding_other_than_exactly_chunked(encodings: list[str]) -> None:
    with pytest.raises(BadRequest):
        request_framing(_raw(*(("Transfer-Encoding", value) for value in encodings)))


# --- response headers -------------------------------------------------------------------------

def test_repeated_set_cookie_headers_are_kept_separately() -> None:
    raw = _raw(("Set-Cookie", "a=1; Path=/"), ("Content-Type", "text/plain"),
               ("Set-Cookie", "b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT"))
    out = client_response_headers(raw, 200)
    assert [v for k, v in out if k.lower() == b"set-cookie"] == [
        b"a=1; Path=/", b"b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT"]


@pytest.mark.parametrize("status", [204, 304])
def test_content_length_dropped_on_bodyless_statuses(status: int) -> None:
    out = client_response_headers(_raw(("Content-Length", "1234"), ("ETag", '"v1"')), status)
    assert out == [(b"ETag", b'"v1"')]


def test_content_length_dropped_when_transfer_encoding_present() -> None:
    out = client_response_headers(_raw(("Transfer-Encoding", "chunked"), ("Content-Length", "10"),
                                       ("Content-Type", "text/plain")), 200)
    assert out == [(b"Content-Type", b"text/plain")]


def test_content_length_kept_on_an_ordinary_response() -> None:
    out = client_response_headers(_raw(("Content-Length", "10"), ("Content-Encoding", "gzip")), 200)
    assert out == [(b"Content-Length", b"10"), (b"Content-Encoding", b"gzip")]
