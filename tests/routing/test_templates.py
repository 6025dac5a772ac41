"""Path templates: what `{name}` and `{name:path}` match, what they capture, and how a capture fills a part's target."""

from __future__ import annotations

import pytest

from strangler.config.model import Match, Route
from strangler.config.template import decoded, parse_part_target, parse_path_template
from strangler.errors import BadPath
from strangler.paths import normalize_path
from strangler.routing import RequestHead, route_matches


@pytest.mark.parametrize(("template", "path", "captures"), [
    ("/api/order-summary/{id}", "/api/order-summary/7", {"id": "7"}),
    ("/api/order-summary/{id}", "/api/order-summary/7/", {"id": "7"}),           # a trailing slash is allowed
    ("/api/order-summary/{id}", "/api/order-summary", None),                     # {id} needs a segment
    ("/api/order-summary/{id}", "/api/order-summary/", None),
    ("/api/order-summary/{id}", "/api/order-summary/7/lines", None),             # the whole path, not a prefix
    ("/api/order-summary/{id}", "/api/order-summaryx/7", None),
    ("/users/{user}/orders/{order}", "/users/ann/orders/12", {"user": "ann", "order": "12"}),
    ("/files/{bucket}/{key:path}", "/files/b/a/b/c.txt", {"bucket": "b", "key": "a/b/c.txt"}),
    ("/files/{bucket}/{key:path}", "/files/b/a/", {"bucket": "b", "key": "a"}),
    ("/files/{bucket}/{key:path}", "/files/b", None),                            # {key:path} needs at least one
    ("/{id}", "/", None),
])
def test_a_template_matches_whole_paths_and_captures_its_segments(template, path, captures):
    """{name} is exactly one non-empty segment, {name:path} the rest; the path matches whole."""
    assert parse_path_template(template).match(path) == captures


def test_captures_are_matched_on_the_normalized_path_and_shown_decoded():
    """Dot segments are resolved before matching, escapes of reserved bytes stay encoded in the capture."""
    template = parse_path_template("/api/order-summary/{id}")
    assert template.match(normalize_path(b"/api/x/../order-summary/%37")) == {"id": "7"}
    assert template.match(normalize_path(b"/api/order-summary/%2e%2e")) is None     # that is /api
    capture = template.match(normalize_path(b"/api/order-summary/a%3Fb%23c"))["id"]
    assert decoded(capture) == "a?b#c"


@pytest.mark.parametrize(("sent", "in_path", "in_query"), [
    (b"7", "/api/orders/7/", "order_id=7"),
    (b";", "/api/orders/%3B/", "order_id=%3B"),
    (b"%3F", "/api/orders/%3F/", "order_id=%3F"),            # ?
    (b"%23", "/api/orders/%23/", "order_id=%23"),            # #
    (b"%252F", "/api/orders/%252F/", "order_id=%252F"),      # a literal %2F, not a slash
    (b"a&b=c", "/api/orders/a%26b%3Dc/", "order_id=a%26b%3Dc"),
    (b"%C3%A9t%C3%A9", "/api/orders/%C3%A9t%C3%A9/", "order_id=%C3%A9t%C3%A9"),
    (b"..;x", None, None),                                   # refused by normalization (400)
    (b"..%2f", None, None),
    (b"%2e%2e", None, None),                                 # resolved away: the template no longer matches
])
def test_a_capture_stays_inside_the_slot_it_fills(sent, in_path, in_query):
    """Whatever a capture holds, each part's target keeps it in its one segment or query value."""
    template = parse_path_template("/c/{id}")
    target = parse_part_target("/api/orders/{id}/?order_id={id}")
    try:
        captures = template.match(normalize_path(b"/c/" + sent))
    except BadPath:
        captures = None
    if in_path is None:
        assert captures is None
        return
    assert target.fill(captures) == f"{in_path}?{in_query}"


def test_a_path_capture_keeps_its_segments_in_a_path_and_none_in_a_query():
    target = parse_part_target("/store/{key}?key={key}")
    captures = parse_path_template("/files/{key:path}").match("/files/a/%3Bb/c")
    assert target.fill(captures) == "/store/a/%3Bb/c?key=a%2F%3Bb%2Fc"


@pytest.mark.parametrize("capture", ["..", ".", "..."])
def test_a_capture_of_only_dots_is_refused_rather_than_filled(capture):
    """Normalization never leaves one, but the filler does not rely on that."""
    with pytest.raises(BadPath):
        parse_part_target("/api/orders/{id}/").fill({"id": capture})


def test_an_encoded_slash_in_a_capture_stays_encoded_in_its_segment():
    """A capture kept with %2F (paths: {encoded_slash: keep}) climbs nowhere: it is one segment."""
    assert parse_part_target("/api/orders/{id}/").fill({"id": "..%2F..%2Fadmin"}) == "/api/orders/..%2F..%2Fadmin/"


def test_routing_fits_a_template_route_and_keeps_prefix_routes_as_they_were():
    template = parse_path_template("/api/order-summary/{id}")
    composite = Route(name="summary", match=Match(path=template.text, template=template), split=(("a", 100.0),))
    prefix = Route(name="orders", match=Match(path="/api/orders"), split=(("a", 100.0),))
    head = lambda path: RequestHead("GET", path, [])  # noqa: E731
    assert route_matches(composite, head("/api/order-summary/7"))
    assert not route_matches(composite, head("/api/order-summary/7/8"))
    assert route_matches(prefix, head("/api/orders/7/lines"))
    assert not route_matches(prefix, head("/api/ordersx"))


@pytest.mark.parametrize(("parse", "text", "message"), [
    (parse_path_template, "/x/{a:path}/y", "must come last"),
    (parse_path_template, "/x/{a:int}", "unknown kind 'int'"),
    (parse_path_template, "/x/a{b}", "must be a whole segment"),
    (parse_path_template, "/x/{a}/{a}", "appears twice"),
    (parse_path_template, "/x/../{a}", "'..'"),
    (parse_path_template, "x/{a}", "must start with '/'"),
    (parse_part_target, "/q/{b}/#x", "'#'"),
    (parse_part_target, "/q?a={b}#x", "'#'"),
    (parse_part_target, "/q/{b:path}", "only enclose a variable name"),
    (parse_part_target, "/q/../{b}", "'..'"),
    (parse_part_target, "/q?x= {b}", "query has ' '"),
    (parse_part_target, "/q?x=%zz", "broken percent-escape"),
    (parse_part_target, "/q//{b}", "'//'"),
], ids=lambda value: getattr(value, "__name__", None))
def test_a_bad_template_or_part_target_says_what_is_wrong(parse, text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)
