"""Comparing a primary's answer with its shadow's: JSON as data, generalised field paths, encodings, ignores, noise."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from strangler.compare import Answer, BodyTooLarge, Comparer, field_name
from strangler.config.model import Shadow, ShadowCompare
from strangler.shadow_state import ShadowState, sample

JSON = [(b"Content-Type", b"application/json")]


def answer(document: object, *, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None,
           encoding: str | None = None) -> Answer:
    body = json.dumps(document).encode() if not isinstance(document, bytes) else document
    extra = list(JSON if headers is None else headers)
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if encoding:
        extra.append((b"Content-Encoding", encoding.encode()))
    return Answer(status, extra, body)


def fields(primary: Answer, shadow: Answer, **settings: object) -> dict[str, tuple[str, str]]:
    comparer = Comparer(ShadowCompare(**settings), 1 << 20)      # type: ignore[arg-type]
    return {d.field: (d.primary, d.shadow) for d in comparer.differences(primary, shadow)}


def test_key_order_and_number_formatting_are_no_difference():
    assert fields(answer(b'{"a": 1.0, "b": [1, 2.50], "c": {"x": 1e2}}'),
                  answer(b'{"c": {"x": 100}, "b": [1.0, 2.5], "a": 1}')) == {}


def test_true_is_not_one_and_a_string_is_not_a_number():
    assert fields(answer({"a": True, "b": "1"}), answer({"a": 1, "b": 1})) == {"$.a": ("true", "1"), "$.b": ('"1"', "1")}


def test_differences_in_array_elements_are_reported_once_at_the_generalised_path():
    primary = answer({"orders": [{"id": 1, "total_cents": 1999}, {"id": 2, "total_cents": 450}]})
    shadow = answer({"orders": [{"id": 1, "total_cents": 2000}, {"id": 2, "total_cents": 500}]})
    assert fields(primary, shadow) == {"$.orders[*].total_cents": ("1999", "2000")}


def test_a_missing_field_and_an_extra_element_say_which_side_lacks_them():
    primary = answer({"id": 1, "payment_id": 8, "lines": [{"sku": "A"}]})
    shadow = answer({"id": 1, "lines": [{"sku": "A"}, {"sku": "B"}], "note": None})
    assert fields(primary, shadow) == {"$.payment_id": ("8", "(missing)"), "$.lines[*]": ("(missing)", '{"sku": "B"}'),
                                       "$.note": ("(missing)", "null")}


def test_odd_keys_are_quoted_in_the_path():
    assert field_name(("orders", 3, "unit price", "x-y")) == '$.orders[*]["unit price"]["x-y"]'


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_equals_the_same_answer_uncompressed(encoding):
    document = {"orders": [{"id": n, "sku": "BNS-1KG"} for n in range(50)]}
    assert fields(answer(document), answer(document, encoding=encoding)) == {}
    assert fields(answer(b"plain text", headers=[]), answer(b"plain text", headers=[], encoding=encoding)) == {}


def test_other_bodies_are_compared_byte_for_byte():
    found = fields(answer(b"<p>total: 19.99</p>", headers=[(b"Content-Type", b"text/html")]),
                   answer(b"<p>total: 20.00</p>", headers=[(b"Content-Type", b"text/html")]))
    assert found == {"body": ("19 bytes, from byte 10: 19.99</p>", "19 bytes, from byte 10: 20.00</p>")}


def test_status_and_headers_are_compared_except_the_ignored_ones():
    primary = answer({}, headers=[*JSON, (b"Date", b"Mon"), (b"X-Cache", b"hit"), (b"Vary", b"Accept, Cookie")])
    shadow = answer({}, status=201, headers=[*JSON, (b"Date", b"Tue"), (b"Vary", b"Accept, Cookie"),
                                             (b"Transfer-Encoding", b"chunked"), (b"Set-Cookie", b"sid=2")])
    assert fields(primary, shadow) == {"status": ("200", "201"), "headers.x-cache": ("hit", "(missing)")}
    assert fields(primary, shadow, ignore_headers=frozenset({"x-cache"})) == {
        "status": ("200", "201"), "headers.date": ("Mon", "Tue"), "headers.set-cookie": ("(removed)", "(removed)")}


def test_ignore_fields_leaves_out_what_each_jsonpath_selects():
    primary = answer({"created_at": "a", "orders": [{"id": 1, "updated_at": "x"}, {"id": 2, "updated_at": "y"}]})
    shadow = answer({"created_at": "b", "orders": [{"id": 1, "updated_at": "z"}, {"id": 3}]})
    assert fields(primary, shadow, ignore_fields=("$.created_at", "$.orders[*].updated_at")) == {
        "$.orders[*].id": ("2", "3")}
    assert set(fields(primary, shadow, ignore_fields=("$..updated_at",))) == {"$.created_at", "$.orders[*].id"}


def test_a_body_that_decodes_past_the_limit_is_not_compared():
    bomb = answer(b"0" * 200_000, headers=[], encoding="gzip")
    with pytest.raises(BodyTooLarge):
        Comparer(ShadowCompare(), 100_000).differences(answer(b"", headers=[]), bomb)


def test_head_answers_are_compared_without_bodies():
    comparer = Comparer(ShadowCompare(), 1 << 20)
    assert comparer.differences(answer(b"", headers=JSON), answer(b"x", headers=JSON), bodiless=True) == []


def test_a_field_in_which_the_primary_differs_from_itself_is_noise():
    """Diffy's idea: two primary answers tell which fields differ anyway."""
    state = ShadowState("orders", Shadow(upstream="orders", compare=ShadowCompare(learn_noise=True)))
    first, again = answer({"id": 7, "at": "10:00:01"}), answer({"id": 7, "at": "10:00:02"})
    candidate = answer({"id": 7, "at": "10:00:03"})
    stamped = state.comparer.differences(first, candidate)
    assert not state.only_noise(stamped)
    state.learn_noise({d.field for d in state.comparer.differences(first, again)})
    assert state.only_noise(stamped)
    wrong = state.comparer.differences(first, answer({"id": 8, "at": "10:00:04"}))
    assert not state.only_noise(wrong)


def test_samples_keep_no_credentials_and_the_ring_keeps_the_latest_fifty():
    state = ShadowState("orders", Shadow(upstream="orders"))
    primary = answer({"total": 1}, headers=[*JSON, (b"Set-Cookie", b"sid=secret")])
    shadow = answer({"total": 2})
    differences = state.comparer.differences(primary, shadow)
    for number in range(60):
        state.mismatch(differences, sample("GET", f"/api/orders/{number}/", [(b"Authorization", b"Bearer secret"),
                                                                              (b"Cookie", b"sid=secret")],
                                           "rid", "legacy", primary, "orders", shadow, differences, limit=1 << 20))
    assert len(state.samples) == 50 and state.samples[0]["request"]["target"] == "/api/orders/10/"
    assert "secret" not in json.dumps(list(state.samples))
    document = state.document()
    assert document["counts"]["mismatch"] == 60 and document["samples"] == 50
    assert document["fields"] == [{"field": "$.total", "count": 60, "example": {"primary": "1", "shadow": "2"}}]
