"""The WebSocket frame codec of both twins, against ``websockets``' own parser as the oracle.

Random and adversarial byte streams (frames right and wrong, fragmented
messages with control frames in between, text split inside a character,
invalid UTF-8, sizes around the limit, garbage, any chunking) go to our
``FrameParser`` and to a ``websockets`` sans-I/O ``Protocol`` in the OPEN state;
the messages, control frames and the close code of the first fault must be the
same. websockets checks text as UTF-8 in its asyncio layer (the message
assembler's incremental decoder), so the oracle does too, frame by frame. The
twins must also agree with each other exactly (reasons included).

Two rules of ours are stricter than websockets', as RFC 6455 and Autobahn ask
(``tests/test_autobahn.py``), and the oracle adds them: a close frame between
the fragments of a message ends the stream like any close (websockets refuses
it, 1002), and the part of a text frame that has come is checked as UTF-8
before the rest arrives (fail fast: 1007 while websockets still waits).
"""

from __future__ import annotations

import codecs
import os
import struct
from typing import Any, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.streams import StreamReader

from fastwsrpc import _speedups_py as py
from fastwsrpc.frames import FrameError

Events = List[Tuple[int, bytes]]
Outcome = Tuple[Events, Optional[int]]


# ------------------------------------------------------------------ the oracle


class _Oracle(Protocol):
    """websockets' Protocol, but a close frame may come between fragments (RFC 6455 5.4; Autobahn 7.1.5)."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None  # the message under way ends with the stream
        super().recv_frame(frame)


def _incomplete_frame(data: bytes) -> Optional[Tuple[int, int, bytes]]:
    """Opcode, reserved bits and (unmasked) payload so far of the frame left incomplete at the end of ``data``."""
    pos, n = 0, len(data)
    while n - pos >= 2:
        b1, b2 = data[pos], data[pos + 1]
        length, start = b2 & 0x7F, pos + 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if n - start < size:
                return None
            length, start = int.from_bytes(data[start : start + size], "big"), start + size
        mask = data[start : start + 4] if b2 & 0x80 else None
        if mask is not None:
            if n - start < 4:
                return None
            start += 4
        if start + length > n:
            body = data[start:]
            if mask is not None:
                body = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
            return b1 & 0x0F, b1 & 0x70, body
        pos = start + length
    return None


def websockets_outcome(chunks: Sequence[bytes], max_size: int, server: bool) -> Outcome:
    """What websockets makes of the stream: whole messages and control frames, then the close code of a fault."""
    proto = _Oracle(Side.SERVER if server else Side.CLIENT, state=State.OPEN, max_size=max_size)
    for chunk in chunks:
        proto.receive_data(chunk)
    out: Events = []
    parts: List[bytes] = []
    current = 0
    decoder: Any = None
    under_way = 0  # opcode of a fragmented message still waiting for its last frame
    for frame in proto.events_received():
        assert isinstance(frame, Frame)
        op = int(frame.opcode)
        if op in (1, 2, 0):
            if op != 0:
                current = op
                parts = []
                decoder = codecs.getincrementaldecoder("utf-8")() if op == 1 else None
            if decoder is not None:
                try:
                    decoder.decode(frame.data, frame.fin)
                except UnicodeDecodeError:
                    return out, 1007
            parts.append(bytes(frame.data))
            under_way = 0 if frame.fin else current
            if frame.fin:
                out.append((current, b"".join(parts)))
        else:
            out.append((op, bytes(frame.data)))
    exc = proto.parser_exc
    if exc is None:
        tail = _incomplete_frame(b"".join(chunks)) if not out or out[-1][0] != 8 else None
        if tail is not None and not tail[1]:  # fail fast: what came of a text frame is checked already
            opcode, _, body = tail
            if opcode == 1 and not under_way:
                decoder = codecs.getincrementaldecoder("utf-8")()
            elif not (opcode == 0 and under_way == 1):
                decoder = None
            if decoder is not None and body:
                try:
                    decoder.decode(body, False)
                except UnicodeDecodeError:
                    return out, 1007
        return out, None
    if isinstance(exc, PayloadTooBig):
        return out, 1009
    if isinstance(exc, UnicodeDecodeError):
        return out, 1007
    assert isinstance(exc, ProtocolError), repr(exc)
    return out, 1002


def our_outcome(impl: Any, chunks: Sequence[bytes], max_size: int, server: bool) -> Tuple[Events, Optional[FrameError]]:
    parser = impl.FrameParser(max_size, server)
    out: Events = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out, parser.error


# ------------------------------------------------------------------ a serializer of our own (any bits, any length form)


def raw_frame(opcode: int, payload: bytes, fin: bool, rsv: int, mask: Optional[bytes], length_form: int) -> bytes:
    """A frame exactly as told, wrong ones included (``length_form``: 0 minimal, 1 forced 16-bit, 2 forced 64-bit)."""
    head1 = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if mask is not None else 0
    n = len(payload)
    if length_form == 2 or n >= 65536:
        header = struct.pack("!BBQ", head1, bit | 127, n)
    elif length_form == 1 or n >= 126:
        header = struct.pack("!BBH", head1, bit | 126, n)
    else:
        header = struct.pack("!BB", head1, bit | n)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


texts = st.text(max_size=40).map(lambda s: s.encode("utf-8"))
payloads = st.one_of(texts, st.binary(max_size=40), st.binary(min_size=120, max_size=300))
close_payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.tuples(
        st.sampled_from([1000, 1001, 1002, 1004, 1005, 1006, 1007, 1011, 1015, 2999, 3000, 4999, 5000, 65535]),
        st.one_of(texts, st.binary(max_size=6)),
    ).map(lambda cr: struct.pack("!H", cr[0]) + cr[1]),
)


@st.composite
def frame_specs(draw: Any, server: bool) -> bytes:
    """One frame, mostly well-formed, sometimes wrong in one way."""
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15))
    payload = draw(close_payloads if opcode == 8 and draw(st.booleans()) else payloads)
    fin = draw(st.booleans()) if opcode < 8 else draw(st.sampled_from([True, True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 4]))
    masked = server if draw(st.integers(0, 15)) else not server
    mask = draw(st.binary(min_size=4, max_size=4)) if masked else None
    length_form = draw(st.sampled_from([0, 0, 0, 1, 2]))
    return raw_frame(opcode, payload, fin, rsv, mask, length_form)


@st.composite
def fragmented_message(draw: Any, server: bool) -> bytes:
    """A text or binary message cut into fragments (inside a character too), control frames in between."""
    opcode = draw(st.sampled_from([1, 2]))
    body = draw(st.text(max_size=60).map(lambda s: s.encode("utf-8")) | st.binary(max_size=60))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    out = b""
    for i, piece in enumerate(pieces):
        mask = os.urandom(4) if server else None
        out += raw_frame(opcode if i == 0 else 0, piece, i == len(pieces) - 1, 0, mask, 0)
        if draw(st.integers(0, 3)) == 0:
            control = draw(st.sampled_from([9, 10]))
            out += raw_frame(control, draw(st.binary(max_size=10)), True, 0, os.urandom(4) if server else None, 0)
    return out


@st.composite
def streams(draw: Any) -> Tuple[List[bytes], int, bool]:
    """A stream of frames (and maybe garbage), cut into chunks anywhere; the max size and the side."""
    server = draw(st.booleans())
    frames = draw(st.lists(frame_specs(server) | fragmented_message(server), max_size=6))
    data = b"".join(frames)
    if draw(st.integers(0, 7)) == 0:
        data += draw(st.binary(max_size=12))
    if draw(st.booleans()) and data:
        data = data[: draw(st.integers(0, len(data)))]  # truncated: a frame still arriving
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    max_size = draw(st.sampled_from([0, 1, 10, 40, 125, 126, 200, 1 << 20]) | st.integers(0, 400))
    return chunks, max_size, server


DIFFERENTIAL = settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@DIFFERENTIAL
@given(streams())
def test_both_twins_agree_with_websockets_frame_for_frame_and_error_for_error(
    compiled: Any, stream: Tuple[List[bytes], int, bool]
) -> None:
    chunks, max_size, server = stream
    expected = websockets_outcome(chunks, max_size, server)
    ours_py = our_outcome(py, chunks, max_size, server)
    ours_c = our_outcome(compiled, chunks, max_size, server)
    assert ours_py == ours_c  # the twins: the very same events and the very same FrameError
    events, error = ours_py
    assert (events, error.code if error is not None else None) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.booleans(), st.integers(0, 100))
def test_garbage_is_refused_the_same_way(compiled: Any, data: bytes, server: bool, max_size: int) -> None:
    expected = websockets_outcome([data], max_size, server)
    for impl in (py, compiled):
        events, error = our_outcome(impl, [data], max_size, server)
        assert (events, error.code if error is not None else None) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=12), max_size=6), st.booleans())
def test_text_split_anywhere_is_checked_as_websockets_decodes_it(
    compiled: Any, pieces: List[bytes], utf8: bool
) -> None:
    """Arbitrary bytes (mostly invalid UTF-8) as the fragments of one text message."""
    if utf8:
        pieces = [p.decode("latin-1").encode("utf-8") for p in pieces]
    pieces = pieces or [b""]
    data = b"".join(raw_frame(1 if i == 0 else 0, p, i == len(pieces) - 1, 0, None, 0) for i, p in enumerate(pieces))
    expected = websockets_outcome([data], 1 << 20, False)
    for impl in (py, compiled):
        events, error = our_outcome(impl, [data], 1 << 20, False)
        assert (events, error.code if error is not None else None) == expected


# ------------------------------------------------------------------ the builder


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0, 1, 2, 8, 9, 10]),
    st.binary(max_size=70_000) | st.binary(max_size=130),
    st.booleans(),
    st.booleans(),
)
def test_built_frames_parse_back_in_websockets(
    speedups: Any, opcode: int, payload: bytes, mask: bool, fin: bool
) -> None:
    if opcode >= 8:
        payload, fin = payload[:125], True
    data = speedups.build_frame(opcode, payload, mask, fin)
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    frame = stop.value.value
    assert (frame.opcode, frame.data, frame.fin) == (Opcode(opcode), payload, fin)
    assert not reader.buffer  # nothing left over: the header's length was exact


def test_builder_refuses_what_no_peer_could_parse(speedups: Any) -> None:
    with pytest.raises(ValueError):
        speedups.build_frame(3, b"")
    with pytest.raises(ValueError):
        speedups.build_frame(speedups.OP_PING, b"x" * 126)
    with pytest.raises(ValueError):
        speedups.build_frame(speedups.OP_CLOSE, b"", False, False)


def test_masks_are_fresh_for_every_frame(speedups: Any) -> None:
    keys = {speedups.build_frame(speedups.OP_TEXT, b"same", True)[2:6] for _ in range(50)}
    assert len(keys) > 40


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.binary(min_size=4, max_size=4))
def test_apply_mask_is_an_involution_and_the_twins_agree(compiled: Any, data: bytes, mask: bytes) -> None:
    assert compiled.apply_mask(data, mask) == py.apply_mask(data, mask)
    assert py.apply_mask(py.apply_mask(data, mask), mask) == data
    assert py.apply_mask(data, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_apply_mask_wants_four_bytes(speedups: Any) -> None:
    with pytest.raises(ValueError):
        speedups.apply_mask(b"abc", b"xyz")


# ------------------------------------------------------------------ the rules, one by one


def test_size_limit_is_applied_from_the_header_before_the_payload_arrives(speedups: Any) -> None:
    parser = speedups.FrameParser(1024, True)
    header = struct.pack("!BBQ", 0x81, 0x80 | 127, 1 << 40)  # claims a terabyte
    assert parser.feed(header) == []
    assert parser.error == FrameError(1009, f"message of {1 << 40} bytes exceeds max_size (1024 bytes)")
    assert not parser.receiving()  # nothing was kept
    assert parser.feed(b"more") == []  # the stream is over


def test_the_limit_counts_every_fragment_of_a_message(speedups: Any) -> None:
    parser = speedups.FrameParser(10, False)
    assert parser.feed(raw_frame(2, b"123456", False, 0, None, 0)) == []
    assert parser.receiving()  # a message under way counts as partly received (slowloris watch)
    assert parser.feed(raw_frame(0, b"12345", True, 0, None, 0)) == []
    assert parser.error is not None and parser.error.code == 1009


def test_control_frames_between_fragments_come_out_first(speedups: Any) -> None:
    parser = speedups.FrameParser(100, False)
    data = raw_frame(1, "h\u00e9".encode()[:2], False, 0, None, 0)
    data += raw_frame(9, b"p", True, 0, None, 0)
    data += raw_frame(0, "h\u00e9".encode()[2:], True, 0, None, 0)
    assert parser.feed(data) == [(speedups.OP_PING, b"p"), (speedups.OP_TEXT, "h\u00e9".encode())]
    assert parser.error is None and not parser.receiving()


def test_masking_rules_of_each_side(speedups: Any) -> None:
    masked = raw_frame(1, b"hi", True, 0, b"abcd", 0)
    plain = raw_frame(1, b"hi", True, 0, None, 0)
    server, client = speedups.FrameParser(100, True), speedups.FrameParser(100, False)
    assert server.feed(masked) == [(1, b"hi")]
    assert client.feed(plain) == [(1, b"hi")]
    for parser, wrong in ((speedups.FrameParser(100, True), plain), (speedups.FrameParser(100, False), masked)):
        assert parser.feed(wrong) == []
        assert parser.error == FrameError(1002, "incorrect masking")


def test_a_close_frame_ends_the_stream_and_what_follows_is_dropped(speedups: Any) -> None:
    parser = speedups.FrameParser(100, False)
    data = raw_frame(1, b"a", True, 0, None, 0) + raw_frame(8, struct.pack("!H", 1001) + b"bye", True, 0, None, 0)
    assert parser.feed(data + raw_frame(1, b"late", True, 0, None, 0)) == [(1, b"a"), (8, b"\x03\xe9bye")]
    assert parser.closed and parser.error is None
    assert parser.feed(b"\x81\x01x") == []
    assert speedups.parse_close(b"\x03\xe9bye") == (1001, "bye")


@pytest.mark.parametrize(
    ("payload", "outcome"),
    [
        (b"", (1005, "")),
        (b"\x03", FrameError(1002, "close frame too short")),
        (struct.pack("!H", 1005), FrameError(1002, "invalid close code 1005")),
        (struct.pack("!H", 4000) + b"\xff", FrameError(1007, "invalid UTF-8 in the close reason")),
        (struct.pack("!H", 4000) + "ok \u00e9".encode(), (4000, "ok \u00e9")),
    ],
)
def test_parse_close(speedups: Any, payload: bytes, outcome: Any) -> None:
    if isinstance(outcome, FrameError):
        with pytest.raises(FrameError) as caught:
            speedups.parse_close(payload)
        assert caught.value == outcome
    else:
        assert speedups.parse_close(payload) == outcome


def test_large_frames_arriving_in_small_chunks(speedups: Any) -> None:
    body = os.urandom(300_000)
    data = raw_frame(2, body, True, 0, b"wxyz", 0) + raw_frame(1, b"next", True, 0, b"abcd", 0)
    parser = speedups.FrameParser(1 << 20, True)
    out: Events = []
    for i in range(0, len(data), 4096):
        out += parser.feed(data[i : i + 4096])
    assert out == [(2, body), (1, b"next")]
    assert not parser.receiving()


def test_long_ascii_and_multibyte_text_is_checked_exactly(speedups: Any) -> None:
    good = ("a" * 37 + "\u00e9\u4e2d\U0001f600") * 50
    bad = good.encode() + b"\xed\xa0\x80"  # an encoded surrogate: not UTF-8
    parser = speedups.FrameParser(1 << 20, False)
    assert parser.feed(raw_frame(1, good.encode(), True, 0, None, 0)) == [(1, good.encode())]
    assert parser.feed(raw_frame(1, bad, True, 0, None, 0)) == []
    assert parser.error == FrameError(1007, "invalid UTF-8 in a text message")
