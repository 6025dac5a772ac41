"""The tunnel's reading of WebSocket frame headers: bytes pass unchanged, frame boundaries are known,
and what RFC 6455 forbids on a direction is found at the frame that breaks it."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strangler.tunnel import FrameReader, close_frame


def encode(opcode: int, payload: bytes, *, masked: bool, fin: bool = True, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    if size < 126:
        head = bytes((first, (0x80 if masked else 0) | size))
    elif size < 1 << 16:
        head = bytes((first, (0x80 if masked else 0) | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def feed_all(reader: FrameReader, *pieces: bytes) -> tuple[bytes, str | None]:
    passed = b""
    for piece in pieces:
        out, error = reader.feed(piece)
        passed += out
        if error is not None:
            return passed, error
    return passed, None


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.sampled_from([0, 1, 125, 126, 300, 65535, 65536, 70000]), min_size=1, max_size=6),
       cut=st.integers(min_value=1, max_value=97))
def test_any_frames_in_any_pieces_pass_unchanged_and_end_on_a_boundary(sizes: list[int], cut: int):
    stream = b"".join(encode(2, bytes(size), masked=True) for size in sizes)
    reader = FrameReader(from_client=True, extensions=False)
    pieces = [stream[at:at + cut] for at in range(0, len(stream), cut)]
    passed, error = feed_all(reader, *pieces)
    assert (passed, error) == (stream, None)
    assert reader.at_boundary


def test_a_header_split_across_reads_is_held_back_until_it_is_whole():
    frame = encode(1, b"hello", masked=False)
    reader = FrameReader(from_client=False, extensions=False)
    assert reader.feed(frame[:1]) == (b"", None)
    assert not reader.at_boundary
    assert reader.feed(frame[1:]) == (frame, None)
    assert reader.at_boundary


def test_mid_payload_the_stream_is_not_at_a_boundary():
    reader = FrameReader(from_client=False, extensions=False)
    frame = encode(2, bytes(1000), masked=False)
    reader.feed(frame[:500])
    assert not reader.at_boundary
    reader.feed(frame[500:])
    assert reader.at_boundary


@pytest.mark.parametrize(("from_client", "frame", "problem"), [
    (True, encode(1, b"x", masked=False), "unmasked"),
    (False, encode(1, b"x", masked=True), "masked"),
    (False, encode(3, b"x", masked=False), "reserved opcode"),
    (False, encode(11, b"", masked=False), "reserved opcode"),
    (False, encode(1, b"x", masked=False, rsv=0x40), "reserved bits"),
    (False, encode(9, bytes(126), masked=False), "control frame"),
    (False, encode(8, b"\x03\xe8", masked=False, fin=False), "control frame"),
    (False, encode(0, b"x", masked=False), "continuation"),
    (False, b"\x82\x7f\x80" + bytes(7), "top bit"),
], ids=["unmasked-client", "masked-upstream", "opcode-3", "opcode-11", "rsv-without-extension", "long-ping",
        "fragmented-close", "stray-continuation", "64-bit-length"])
def test_a_forbidden_frame_is_found_after_the_good_ones_before_it(from_client: bool, frame: bytes, problem: str):
    good = encode(1, b"fine", masked=from_client)
    reader = FrameReader(from_client=from_client, extensions=False)
    passed, error = reader.feed(good + frame + good)
    assert passed == good
    assert error is not None and problem in error


def test_a_new_message_inside_a_fragmented_one_is_refused_but_control_frames_may_interleave():
    reader = FrameReader(from_client=False, extensions=False)
    start, ping, end = encode(1, b"a", masked=False, fin=False), encode(9, b"", masked=False), encode(0, b"b", masked=False)
    assert reader.feed(start + ping + end) == (start + ping + end, None)
    _, error = reader.feed(start + encode(2, b"c", masked=False))
    assert error is not None and "inside a fragmented" in error


def test_with_an_extension_the_reserved_bits_are_the_extensions_business():
    compressed = encode(1, b"\xf2\x48\x05\x00", masked=False, rsv=0x40)      # permessage-deflate sets RSV1
    assert FrameReader(from_client=False, extensions=True).feed(compressed) == (compressed, None)


@pytest.mark.parametrize("masked", [False, True])
def test_close_frames_of_the_proxy_are_well_formed(masked: bool):
    data = close_frame(1001, "proxy: shutdown", masked=masked)
    reader = FrameReader(from_client=masked, extensions=False)
    assert reader.feed(data) == (data, None)
    payload = data[6:] if masked else data[2:]
    if masked:
        payload = bytes(byte ^ data[2 + i % 4] for i, byte in enumerate(payload))
    assert int.from_bytes(payload[:2], "big") == 1001 and payload[2:] == b"proxy: shutdown"
