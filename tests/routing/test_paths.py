"""Path normalization: the router matches, and the upstream receives, one and the same path."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strangler.errors import BadPath
from strangler.config.model import Match, Route
from strangler.paths import covers, forwarded_path, normalize_path, path_forms, strip_prefix


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/", "/"),
    (b"/api/orders/7", "/api/orders/7"),
    (b"/a/./b", "/a/b"),
    (b"/a/b/.", "/a/b/"),
    (b"/a/b/../c", "/a/c"),
    (b"/a/b/..", "/a/"),
    (b"/a/b/c/../../d", "/a/d"),
    (b"/./a", "/a"),
    (b"/a/..", "/"),
])
def test_dot_segments_are_resolved(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (b"//a", "/a"),
    (b"/a//b", "/a/b"),
    (b"/a///b//", "/a/b/"),
    (b"//", "/"),
    (b"/a/.//./b", "/a/b"),
])
def test_repeated_slashes_collapse(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/a/%2e%2e/b", "/b"),
    (b"/a/b/%2E%2E/c", "/a/c"),
    (b"/a/%2e/b", "/a/b"),
    (b"/a/%2E/b", "/a/b"),
    (b"/a/.%2e/b", "/b"),
    (b"/a/%2e./b", "/b"),
])
def test_percent_encoded_dot_segments_are_resolved(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/%7Euser", "/~user"),
    (b"/%41%62%63", "/Abc"),
    (b"/a%2Db%5Fc%2ed", "/a-b_c.d"),
    (b"/%30%39", "/09"),
])
def test_encoded_unreserved_characters_are_decoded(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/a%20b", "/a%20b"),          # reserved/other bytes stay encoded
    (b"/a%3fb", "/a%3Fb"),          # hex is upper-cased, the byte stays encoded
    (b"/%25", "/%25"),
    (b"/caf%C3%A9", "/caf%C3%A9"),
    (b"/a b", "/a%20b"),            # bytes browsers encode anyway are encoded, not rejected
])
def test_other_escapes_stay_encoded(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", [
    b"/a%2Fb", b"/a%2fb",           # encoded slash
    b"/a%5Cb", b"/a%5cb",           # encoded backslash
    b"/a\\b", b"/..\\admin",        # literal backslash
    b"/a%00b",                      # encoded NUL
    b"/a%0d%0aSet-Cookie:x",        # encoded CR LF
    b"/a%7Fb",                      # encoded DEL
    b"/a\x00b", b"/a\x01b", b"/a\tb", b"/a\x7fb",   # literal control bytes
    b"/a%", b"/a%2", b"/a%zz", b"/a%2g", b"/%%41",  # broken escapes
])
def test_unsafe_paths_are_rejected(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalize_path(raw)


@pytest.mark.parametrize("raw", [
    b"/..", b"/../etc/passwd", b"/a/../..", b"/a/../../b",
    b"/%2e%2e/admin", b"/a/%2e%2e/%2e%2e/b", b"/a/%2E%2E/%2E%2E",
])
def test_dot_dot_above_root_is_rejected(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalize_path(raw)


@pytest.mark.parametrize("raw", [
    b"/api/orders/..;/admin", b"/api/orders/..;x=1/admin", b"/api/orders/..;", b"/..;/admin",
    b"/api/orders/.;/admin", b"/api/orders/.;jsessionid=1",
    b"/api/orders/%2e%2e;/admin", b"/api/orders/%2E%2E;x/admin", b"/api/orders/.%2e;/admin",
    b"/api/orders/%2e%2e%3b/admin", b"/api/orders/..%3Bx/admin", b"/api/orders/%2e%3B/admin",
    b"/api/orders/;x/../admin", b"/api/orders/;/../admin", b"/api/orders/%3Bx/../admin",
])
def test_dot_segments_with_path_parameters_are_rejected(raw: bytes) -> None:
    # Tomcat and Spring drop `;params` before resolving dot segments: /api/orders/..;/admin is
    # /api/admin there, and a plain name elsewhere. `;x` alone is an empty segment to them, so a
    # `..` after it removes the segment before. Upstreams disagree: refused, never resolved.
    with pytest.raises(BadPath):
        normalize_path(raw)


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/api/orders/7;jsessionid=abc", "/api/orders/7;jsessionid=abc"),
    (b"/api/orders/7;v=1/items;v=2", "/api/orders/7;v=1/items;v=2"),
    (b"/;jsessionid=abc", "/;jsessionid=abc"),
    (b"/app/;jsessionid=abc", "/app/;jsessionid=abc"),
    (b"/a/...;x", "/a/...;x"),
    (b"/a/..x;y", "/a/..x;y"),
    (b"/a/.x;y", "/a/.x;y"),
    (b"/a/b;x/../c", "/a/c"),
    (b"/a/b;x/%2e%2e/c", "/a/c"),
])
def test_path_parameters_on_other_segments_pass(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", [b"http://evil.example/x", b"evil.example/x", b"*", b"a/b"])
def test_target_that_is_not_an_origin_form_path_is_rejected(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalize_path(raw)


def test_dot_dot_leaving_a_route_prefix_cannot_match_that_route() -> None:
    path = normalize_path(b"/api/orders/../admin")
    assert path == "/api/admin"
    assert not covers("/api/orders", path)
    assert normalize_path(b"/api/orders/%2e%2e/admin") == "/api/admin"


@pytest.mark.parametrize(("prefix", "path", "expected"), [
    ("/api/orders", "/api/orders", True),
    ("/api/orders", "/api/orders/", True),
    ("/api/orders", "/api/orders/7", True),
    ("/api/orders", "/api/orders/7/items", True),
    ("/api/orders", "/api/ordersx", False),
    ("/api/orders", "/api/order", False),
    ("/api/orders", "/api", False),
    ("/api/orders", "/API/orders", False),
    ("/", "/", True),
    ("/", "/anything/at/all", True),
])
def test_covers_matches_on_segment_boundaries(prefix: str, path: str, expected: bool) -> None:
    assert covers(prefix, path) is expected


@pytest.mark.parametrize(("path", "prefix", "expected"), [
    ("/api/orders/7", "/api/orders", "/7"),
    ("/api/orders/7/items", "/api/orders", "/7/items"),
    ("/api/orders", "/api/orders", "/"),
    ("/api/orders/", "/api/orders", "/"),
    ("/x/y", "/", "/x/y"),
])
def test_strip_prefix(path: str, prefix: str, expected: str) -> None:
    assert strip_prefix(path, prefix) == expected


# Paths built from the pieces that make normalization interesting.
_pieces = st.sampled_from([
    "/", "//", ".", "..", "/./", "/../", "%2e", "%2E", "%2e%2e", "%2E%2e", "a", "b", "~", "-", "_",
    "%7E", "%41", "%7e", "%20", " ", "%3F", "%3f", "%25", "%C3%A9", "!", "$", "&", "'", "(", ")",
    "*", "+", ",", ";", "=", ":", "@", "%40", "x.y",
])
_raw_paths = st.lists(_pieces, max_size=20).map(lambda parts: ("/" + "".join(parts)).encode())


def _normalized_or_none(raw: bytes) -> str | None:
    try:
        return normalize_path(raw)
    except BadPath:
        return None


@settings(max_examples=2000, deadline=None)
@given(_raw_paths)
def test_normalize_path_is_idempotent_and_leaves_no_dot_or_empty_segments(raw: bytes) -> None:
    once = _normalized_or_none(raw)
    if once is None:
        return
    assert once.startswith("/")
    assert normalize_path(once.encode("ascii")) == once
    for bad in ("//", "/./", "/../"):
        assert bad not in once
    assert not once.endswith(("/.", "/.."))
    assert "%2e" not in once.lower()


_param_pieces = st.sampled_from(["/", "..", ".", "%2e", "%2E", ";", "%3b", "%3B", "x", "=", "a;b", "/;x"])
_param_paths = st.lists(_param_pieces, max_size=12).map(lambda parts: ("/" + "".join(parts)).encode())


@settings(max_examples=2000, deadline=None)
@given(_param_paths)
def test_no_normalized_segment_is_a_dot_segment_with_parameters(raw: bytes) -> None:
    once = _normalized_or_none(raw)
    if once is None:
        return
    for segment in once.split("/"):
        name = segment.split(";", 1)[0].split("%3B", 1)[0]
        assert name not in (".", ".."), (raw, once)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_normalize_path_either_rejects_or_returns_a_clean_path(tail: bytes) -> None:
    once = _normalized_or_none(b"/" + tail)
    if once is None:
        return
    assert once.startswith("/")
    assert once.isascii() and once.isprintable() and "\\" not in once
    assert normalize_path(once.encode("ascii")) == once
    for bad in ("//", "/./", "/../", "?", "#"):
        assert bad not in once


# --- encoded slashes kept (paths.encoded_slash: keep) ----------------------------------------------

@pytest.mark.parametrize(("raw", "matched", "forwarded"), [
    (b"/api/projects/group%2Fname", "/api/projects/group%2Fname", "/api/projects/group%2Fname"),
    (b"/api/projects/group%2fname", "/api/projects/group%2Fname", "/api/projects/group%2fname"),
    (b"/api/x%7e%41/a%2Fb%20c", "/api/x~A/a%2Fb%20c", "/api/x%7e%41/a%2Fb%20c"),
    (b"/api/./projects/../projects//a%2Fb/", "/api/projects/a%2Fb/", "/api/projects/a%2Fb/"),
    (b"/signed/a%2Fb%3d%3D", "/signed/a%2Fb%3D%3D", "/signed/a%2Fb%3d%3D"),
])
def test_kept_encoded_slashes_match_inside_their_segment_and_go_out_as_sent(raw: bytes, matched: str,
                                                                          forwarded: str) -> None:
    forms = path_forms(raw)
    assert (forms.matched, forms.forwarded()) == (matched, forwarded)
    assert covers("/api/projects", "/api/projects/group%2Fname") and not covers("/api/projects/group", forms.matched)


def test_kept_paths_lose_the_prefix_by_segments() -> None:
    forms = path_forms(b"/files/%7Euser/a%2Fb")
    assert forms.forwarded("/files") == "/%7Euser/a%2Fb"
    assert path_forms(b"/files").forwarded("/files") == "/"


@pytest.mark.parametrize("raw", [
    b"/api/projects/..%2F..%2Fadmin", b"/api/projects/%2e%2e%2Fadmin", b"/api/projects/a%2F..",
    b"/api/projects/a%2F.%2Fb", b"/api/projects/..%2f", b"/api/projects/a%5Cb",
])
def test_a_dot_segment_behind_an_encoded_slash_never_passes(raw: bytes) -> None:
    with pytest.raises(BadPath):
        path_forms(raw)
    with pytest.raises(BadPath):
        normalize_path(raw)


def test_a_route_that_rejects_encoded_slashes_refuses_them_even_when_another_keeps_them() -> None:
    keep = Route(name="keep", match=Match(path="/api"), split=(("a", 100.0),), encoded_slash="keep", strip_prefix=True)
    reject = Route(name="reject", match=Match(path="/api"), split=(("a", 100.0),))
    forms = path_forms(b"/api/group%2Fname")
    assert forwarded_path(forms.matched, forms, keep) == "/group%2Fname"
    with pytest.raises(BadPath):
        forwarded_path(forms.matched, forms, reject)
    plain = path_forms(b"/api/%61")
    assert forwarded_path(plain.matched, plain, reject) == "/api/a"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "%2e%2e", "%2E", "a", "%2F", "%2f", "b%2F..", "%2F..%2F", "..%2F", "x"]),
                max_size=8))
def test_a_kept_path_under_a_prefix_stays_under_it_however_the_upstream_decodes_it(parts: list[str]) -> None:
    """`..%2F` never leaves the prefix: decoding every escape and resolving dot segments, as the most
    trusting upstream would, lands under the route's prefix whenever the proxy matched it there."""
    raw = ("/api/projects/" + "/".join(parts)).encode()
    try:
        forms = path_forms(raw)
    except BadPath:
        return
    if covers("/api/projects", forms.matched):
        decoded = posixpath.normpath(unquote(forms.forwarded()))
        assert decoded == "/api/projects" or decoded.startswith("/api/projects/"), (raw, forms)


@pytest.mark.parametrize("raw", [b"/", b"/api/projects/7", b"/api/projects/7/", b"/files/a.txt"])
def test_plain_paths_take_the_same_forms_either_way(raw: bytes) -> None:
    forms = path_forms(raw)
    assert forms.matched == forms.forwarded() == normalize_path(raw) and not forms.has_encoded_slash
    assert forms.forwarded("/files") == strip_prefix(forms.matched, "/files")
