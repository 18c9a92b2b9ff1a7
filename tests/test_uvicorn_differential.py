"""Differential: uvicorn with our codec on the connection and uvicorn without it must look alike to a client.

``fastwsrpc/uvicorn_direct.py`` swaps ``websockets``' parser for our
``FrameParser`` on an open connection and writes answers straight to the
transport. Whatever the client sends, the client must not be able to tell:
the same answers, the same pongs, the same close code, the connection ended
at the same point. So the same byte stream goes to two uvicorn servers that
serve the same methods: one where the takeover happens (the default) and one
where it cannot, because its app sits behind :class:`PlainReceive`, a
middleware whose ``receive`` is a plain function: ``StarletteTransport``
finds no uvicorn protocol behind it (no ``__self__``), so that connection
stays on ASGI and ``websockets`` parses every frame. Hypothesis draws the
streams (calls, garbage, fragments with pings between them, UTF-8 split
anywhere, and an ending: quiet, a protocol fault, a client close, a server
close); a table adds the adversarial endings one by one.

Only the bytes a client reads are compared, and no sleep stands in for a
wait: every wait is a bounded read of frames the server owes (answers counted
from the stream, one pong per ping) or of its EOF; a stream that ends open is
closed by a last ping whose pong is the barrier, then a normal close. (The
frames sent before the 101 are awaited server-side: :class:`HoldingManager`
is told by uvicorn's queue itself when they are in.)

What the two may legitimately do differently, and how it is kept out:

* Close reasons: ``websockets`` words its own ("frame with N bytes exceeds
  limit of M bytes"), we word ours, and uvicorn closes a text message that is
  not UTF-8 with no reason at all. Only the close code is compared.
* Invalid UTF-8 in a text message: we fail the connection at the first bad
  byte (as RFC 6455 section 8.1 allows), uvicorn only once the message is
  whole and handed to the app, and meanwhile it still answers pings that
  follow in the stream, and raises inside ``data_received`` when a close
  frame follows in the same read (``InvalidState`` from ``send_close(1007)``:
  no close frame at all). So a bad text message is always the last thing a
  stream sends, in one write, whole, with no control frame inside it.
* Frames sent before the 101: uvicorn's HTTP layer drops whatever follows
  the upgrade request in the same read, so early frames are sent once the
  server is in the app (:class:`HoldingManager` says so, and holds the accept
  until they wait in uvicorn's queue); and data frames only, since
  ``websockets`` would answer a ping before uvicorn sends the 101.
* Frames after a fault: both servers stop reading, so trailing bytes go in
  the same write as the fault (a later segment could meet a closed socket
  and come back as a reset, which is read as the end of the stream anyway).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import pytest
from fastapi import FastAPI, WebSocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from fastwsrpc import RpcChannel, WebSocketRpcEndpoint, _accel
from fastwsrpc.endpoint import ConnectionManager
from fastwsrpc.uvicorn_direct import FastReader

from .app import ServerMethods
from .support import ServerThread, raw_connection

pytestmark = pytest.mark.e2e

#: uvicorn's ``ws_max_size``: small, so that 1009 from the parser is within reach.
WS_MAX_SIZE = 4096
#: The endpoint's own limit, below uvicorn's: a message between the two makes the *server* close (1009).
RPC_MAX_SIZE = 2048
#: Every wait for the server, in seconds (a healthy server answers in milliseconds).
WAIT = 3.0
MASK = b"\x5a\x13\xc7\x81"
BARRIER = b"barrier"
VALID_CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999)
INVALID_CLOSE_CODES = (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
BAD_UTF8 = (b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82")
#: Data messages that are not calls, each with the number of answers the server owes for it.
GARBAGE: Tuple[Tuple[bytes, int], ...] = (
    (b"", 1),  # parse error
    (b"[]", 1),  # empty batch
    (b"{}", 1),
    (b"null", 1),
    (b"[1,2]", 1),  # one batch answer
    (b'{"id":1,"method":"echo","params":{"text":"a"}}', 1),  # no "jsonrpc"
    (b'{"jsonrpc":"2.0","id":5,"result":1}', 0),  # an answer to nothing: dropped
    (b'{"jsonrpc":"2.0","method":"echo","params":{"text":"n"}}', 0),  # a notification
)


# ---------------------------------------------------------------- the two servers


class PlainReceive:
    """ASGI middleware that wraps ``receive`` in a plain function.

    ``StarletteTransport`` looks for uvicorn's protocol as ``receive.__self__``;
    a function has none, so no takeover: the reference server stays on ASGI.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def plain_receive() -> Any:
            return await receive()

        # Only for HoldingManager (a test's look at uvicorn's queue); StarletteTransport never sees it.
        scope = dict(scope, **{"test.protocol": getattr(receive, "__self__", None)})
        await self.app(scope, plain_receive, send)


#: Per connection that sends frames before the 101 (header ``x-early``): set once the app holds its accept.
ARRIVED: Dict[str, threading.Event] = {}


def uvicorn_protocol(websocket: WebSocket) -> Any:
    """uvicorn's protocol object behind ``websocket``, through :class:`PlainReceive` too."""
    return websocket.scope.get("test.protocol") or getattr(websocket._receive, "__self__", None)


class HoldingManager(ConnectionManager):
    """Accepts a connection that announced early frames only once they wait in uvicorn's queue.

    So they were parsed by ``websockets`` before the handshake's answer, and
    the takeover (right after the accept) starts with messages already queued.
    """

    async def connect(
        self,
        websocket: WebSocket,
        subprotocol: Optional[str] = None,
        headers: Optional[List[Tuple[bytes, bytes]]] = None,
    ) -> None:
        early = int(websocket.headers.get("x-early", "0"))
        if early:
            ARRIVED[websocket.headers["x-token"]].set()
            queue = getattr(uvicorn_protocol(websocket), "queue", None)  # uvicorn's sans-I/O protocol only
            if queue is not None:
                await _queued(queue, 1 + early)  # the connect event and one per early message
        await super().connect(websocket, subprotocol, headers)


async def _queued(queue: asyncio.Queue[Any], count: int) -> None:
    """Wait until uvicorn's ASGI queue holds ``count`` events: told by its own put, not by polling.

    Bounded: a frame that never arrives fails the comparison that follows.
    """
    reached = asyncio.Event()
    put = queue.put_nowait

    def counting_put(item: Any) -> None:
        put(item)
        if queue.qsize() >= count:
            reached.set()

    queue.put_nowait = counting_put  # type: ignore[method-assign]
    try:
        if queue.qsize() < count:
            await asyncio.wait_for(reached.wait(), WAIT)
    except asyncio.TimeoutError:
        pass
    finally:
        del queue.put_nowait


class Pair(NamedTuple):
    direct: ServerThread
    reference: ServerThread
    #: Per connection: (uvicorn protocol class name, whether our reader took over).
    direct_seen: List[Tuple[str, bool]]
    reference_seen: List[Tuple[str, bool]]


def serve(seen: List[Tuple[str, bool]], wrap: bool, **config: Any) -> ServerThread:
    async def record(channel: RpcChannel) -> None:
        transport: Any = channel.socket
        server = transport._server
        seen.append((type(server).__name__, isinstance(getattr(server, "conn", None), FastReader)))

    app = FastAPI()
    endpoint = WebSocketRpcEndpoint(
        ServerMethods(), manager=HoldingManager(), max_message_size=RPC_MAX_SIZE, on_connect=[record]
    )
    endpoint.register_route(app, "/ws")
    return ServerThread(PlainReceive(app) if wrap else app, ws_max_size=WS_MAX_SIZE, **config)


def start_pair(**config: Any) -> Pair:
    direct_seen: List[Tuple[str, bool]] = []
    reference_seen: List[Tuple[str, bool]] = []
    direct = serve(direct_seen, False, **config).start()
    try:
        reference = serve(reference_seen, True, **config).start()
    except BaseException:
        direct.stop()
        raise
    return Pair(direct, reference, direct_seen, reference_seen)


@pytest.fixture(scope="module")
def twin(speedups: Any) -> Iterator[Any]:
    """The codec twin the module's servers use (module-wide, so both tests share one pair of servers per twin)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_accel, "impl", speedups)
        yield speedups


@pytest.fixture(scope="module")
def pair(twin: Any) -> Iterator[Pair]:
    servers = start_pair()
    try:
        yield servers
    finally:
        servers.direct.stop()
        servers.reference.stop()
    # The comparison meant something: one side ran on our codec, the other never did.
    assert servers.reference_seen and not any(took for _, took in servers.reference_seen)
    if any(name == "WebSocketsSansIOProtocol" for name, _ in servers.direct_seen):
        assert all(took for _, took in servers.direct_seen), servers.direct_seen


# ---------------------------------------------------------------- frames as a client sends them


def frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: Optional[bytes] = MASK,
    length: Optional[int] = None,
) -> bytes:
    """One client frame, built by hand rather than by the codec under test, so that it can break any rule.

    ``length``: the length the header announces, when it must lie.
    """
    n = len(payload) if length is None else length
    bit = 0x80 if mask is not None else 0
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: Optional[int], reason: bytes = b"", mask: bytes = MASK) -> bytes:
    return frame(8, b"" if code is None else code.to_bytes(2, "big") + reason, mask=mask)


def call(request_id: int, text: str, method: str = "echo") -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {"text": text}}, ensure_ascii=False
    ).encode()


def fragments(
    opcode: int, payload: bytes, cuts: Sequence[int], between: Sequence[bytes] = (), mask: bytes = MASK
) -> bytes:
    """``payload`` as one message of ``len(cuts) + 1`` fragments, cut at ``cuts``.

    Anywhere: inside a UTF-8 sequence too, and twice at one place (an empty
    fragment). ``between[i]`` (control frames) goes after fragment ``i``.
    """
    bounds = [0, *sorted(cuts), len(payload)]
    pieces = [payload[a:b] for a, b in zip(bounds, bounds[1:])]
    wire = b""
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        wire += frame(opcode if i == 0 else 0, piece, fin=last, mask=mask)
        if not last and i < len(between):
            wire += between[i]
    return wire


class Step(NamedTuple):
    """Frames written back to back (cut into writes at ``cuts``), and what the server owes for them."""

    data: bytes
    answers: int = 0
    pings: Tuple[bytes, ...] = ()
    cuts: Tuple[int, ...] = ()
    messages: int = 0  # whole data messages in it, answered or not


def concat(steps: Sequence[Step]) -> Step:
    """The steps' frames as one step (cut nowhere)."""
    return Step(
        b"".join(step.data for step in steps),
        sum(step.answers for step in steps),
        tuple(ping for step in steps for ping in step.pings),
        messages=sum(step.messages for step in steps),
    )


class Ending(NamedTuple):
    """How the stream ends.

    * ``quiet``: ``data`` (pings with their payloads in ``pings``, then a message
      left half sent, or nothing), then a ping as the barrier and a normal close.
    * ``closed``: ``data`` makes the server close (a fault, a close frame), in one write.
    * ``server-close``: ``data`` is a message over the endpoint's limit, so the
      app closes (1009); once that close frame is read, ``reply`` is sent.
    """

    kind: str
    data: bytes = b""
    reply: bytes = b""
    pings: Tuple[bytes, ...] = ()


class Scenario(NamedTuple):
    early: Step  # sent before the 101: whole data messages only (``messages`` of them)
    steps: Tuple[Step, ...]
    ending: Ending


# ---------------------------------------------------------------- what a client sees


Seen = List[Any]


def normal(got: Tuple[int, bytes]) -> Tuple[Any, ...]:
    """A frame as compared: a close frame by its code alone (None: no code), the rest whole."""
    opcode, payload = got
    if opcode == 8:
        return (8, int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None)
    return got


async def read_frame(reader: asyncio.StreamReader) -> Optional[Tuple[int, bytes]]:
    """One server frame, or None at the end of the stream (EOF or reset); TimeoutError if the server is silent."""
    try:
        head = await asyncio.wait_for(reader.readexactly(2), WAIT)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), WAIT), "big")
        elif length == 127:
            length = int.from_bytes(await asyncio.wait_for(reader.readexactly(8), WAIT), "big")
        return head[0] & 0x0F, await asyncio.wait_for(reader.readexactly(length), WAIT)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None


async def read_owed(reader: asyncio.StreamReader, answers: int, pings: Sequence[bytes]) -> Tuple[Any, ...]:
    """The answers and pongs a step is owed, or what came instead (a close, the end).

    Answers are compared as a sorted list: the calls of one step run as
    concurrent tasks on the server, so their order is not part of the contract.
    Pongs keep their order (the protocol writes them as it reads the pings).
    """
    data: List[Tuple[int, bytes]] = []
    pongs: List[bytes] = []
    other: List[Any] = []
    for _ in range(answers + len(pings) + 1):
        if len(data) >= answers and len(pongs) >= len(pings):
            break
        got = await read_frame(reader)
        if got is None:
            other.append("eof")
            break
        if got[0] == 10:
            pongs.append(got[1])
        elif got[0] in (1, 2):
            data.append(got)
        else:
            other.append(normal(got))
            if got[0] == 8:
                break
    return ("owed", sorted(data), pongs, other)


async def read_to_eof(reader: asyncio.StreamReader) -> List[Any]:
    seen: List[Any] = []
    for _ in range(200):  # bounded: the server closes long before
        got = await read_frame(reader)
        if got is None:
            seen.append("eof")
            return seen
        seen.append(normal(got))
    seen.append("no eof")
    return seen


async def connect(url: str, early: Step) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """``raw_connection``; with ``early`` frames, those are sent before the 101, once the app holds its accept."""
    if not early.data:
        return await raw_connection(url)
    wsuri = parse_uri(url)
    handshake = ClientProtocol(wsuri)
    request = handshake.connect()
    token = uuid.uuid4().hex
    request.headers["x-early"] = str(early.messages)
    request.headers["x-token"] = token
    arrived = ARRIVED[token] = threading.Event()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(wsuri.host, wsuri.port), WAIT)
    try:
        handshake.send_request(request)
        writer.write(b"".join(handshake.data_to_send()))
        if not await asyncio.to_thread(arrived.wait, WAIT):
            raise asyncio.TimeoutError
        writer.write(early.data)
        return reader, writer, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    except BaseException:
        writer.close()
        raise
    finally:
        del ARRIVED[token]


async def write(writer: asyncio.StreamWriter, data: bytes, cuts: Sequence[int] = ()) -> None:
    bounds = sorted(set(cuts) | {0, len(data)})
    for a, b in zip(bounds, bounds[1:]):
        writer.write(data[a:b])
        await writer.drain()


async def observe(url: str, scenario: Scenario, mask: bytes = MASK) -> Seen:
    """Everything the client reads, phase by phase, as the scenario plays out on one connection."""
    seen: Seen = []
    reader, writer, head = await connect(url, scenario.early)
    seen.append(head.split(b"\r\n", 1)[0])
    try:
        for i, step in enumerate((scenario.early, *scenario.steps)):
            if i:
                await write(writer, step.data, step.cuts)
            seen.append(await read_owed(reader, step.answers, step.pings))
            if seen[-1][3]:  # closed, or gone: nothing more to send
                return seen
        ending = scenario.ending
        if ending.kind == "quiet":
            await write(writer, ending.data + frame(9, BARRIER, mask=mask))
            seen.append(await read_owed(reader, 0, [*ending.pings, BARRIER]))
            await write(writer, close_frame(1000, b"bye", mask))
            seen.append(await read_to_eof(reader))
        elif ending.kind == "closed":
            await write(writer, ending.data)
            seen.append(await read_to_eof(reader))
        else:
            await write(writer, ending.data)
            before: List[Any] = []
            for _ in range(200):
                got = await read_frame(reader)
                before.append("eof" if got is None else normal(got))
                if got is None or got[0] == 8:
                    break
            seen.append(before)
            if before[-1] != "eof":
                await write(writer, ending.reply)
                seen.append(await read_to_eof(reader))
    except asyncio.TimeoutError:
        seen.append("timeout")
    finally:
        writer.close()
    return seen


async def compare(pair: Pair, scenario: Scenario, mask: bytes = MASK) -> None:
    direct, reference = await asyncio.gather(
        observe(pair.direct.url(), scenario, mask), observe(pair.reference.url(), scenario, mask)
    )
    if direct != reference and _dangles(scenario):
        # One deliberate difference (Autobahn 7.1.5): a close between the fragments of a message
        # ends the stream normally in our codec, where websockets' says 1002.
        reference = [[(8, 1000) if x == (8, 1002) else x for x in r] if isinstance(r, list) else r for r in reference]
    assert direct == reference, f"direct:    {direct}\nreference: {reference}\nscenario:  {scenario}"
    # Equal, and each phase got what it was owed (a silent server on both sides is a failure too).
    assert "timeout" not in reference, reference


def _dangles(scenario: Scenario) -> bool:
    """Whether a close comes between the fragments of a message: in the client's bytes, or after
    them (``quiet`` ends with a normal close)."""
    data = b"".join([scenario.early.data, *(step.data for step in scenario.steps), scenario.ending.data])
    pos, open_message = 0, False
    for _ in range(len(data) + 1):  # bounded: each round takes one frame
        if pos + 2 > len(data):
            break
        b0, b1 = data[pos], data[pos + 1]
        length, pos = b1 & 0x7F, pos + 2
        if length == 126:
            length, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        pos += (4 if b1 & 0x80 else 0) + length
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode in (0, 1, 2):
            open_message = not fin
        elif opcode == 8 and open_message:
            return True
    return open_message and scenario.ending.kind == "quiet"


# ---------------------------------------------------------------- the adversarial table


def one(data: bytes, answers: int = 0, pings: Tuple[bytes, ...] = ()) -> Step:
    """A step of ``answers`` messages, each answered."""
    return Step(data, answers, pings, messages=answers)


NOTHING = Step(b"")
CALL = call(7, "héllo ✓ 😀")
BIG = b"!" + b"x" * (RPC_MAX_SIZE + 100)  # over the endpoint's limit, under uvicorn's

TABLE: List[Tuple[str, Scenario]] = [
    ("quiet", Scenario(NOTHING, (one(frame(1, CALL), 1),), Ending("quiet"))),
    ("early-call", Scenario(one(frame(1, CALL) + frame(2, b"[]"), 2), (), Ending("quiet"))),
    (
        "early-fragments",
        Scenario(one(fragments(1, CALL, [3, 40, 41, 42]), 1), (one(frame(1, CALL), 1),), Ending("quiet")),
    ),
    (
        "utf8-split-with-pings",
        Scenario(
            NOTHING,
            (
                one(
                    fragments(1, CALL, range(40, len(CALL)), [frame(9, b"a"), frame(10, b"b"), frame(9, b"")]),
                    1,
                    (b"a", b""),
                ),
            ),
            Ending("quiet"),
        ),
    ),
    (
        "empty-fragments",
        Scenario(NOTHING, (one(frame(2, b"", fin=False) + frame(0, b"") + frame(0, b"[]"), 1),), Ending("quiet")),
    ),
    ("dangling-text", Scenario(NOTHING, (), Ending("quiet", frame(1, b'{"a":"\xe2\x82', fin=False)))),
    (
        "dangling-binary",
        Scenario(NOTHING, (), Ending("quiet", frame(2, b"\xff", fin=False) + frame(0, b"x", fin=False))),
    ),
    ("close-normal", Scenario(NOTHING, (), Ending("closed", close_frame(1000, b"bye")))),
    ("close-empty", Scenario(NOTHING, (), Ending("closed", close_frame(None)))),
    ("close-4999", Scenario(NOTHING, (), Ending("closed", close_frame(4999, "é".encode())))),
    ("close-then-more", Scenario(NOTHING, (), Ending("closed", close_frame(1001) + frame(9, b"p") + frame(1, CALL)))),
    ("close-one-byte", Scenario(NOTHING, (), Ending("closed", frame(8, b"\x03")))),
    ("close-1005", Scenario(NOTHING, (), Ending("closed", close_frame(1005)))),
    ("close-999", Scenario(NOTHING, (), Ending("closed", close_frame(999)))),
    ("close-1015", Scenario(NOTHING, (), Ending("closed", close_frame(1015)))),
    ("close-5000", Scenario(NOTHING, (), Ending("closed", close_frame(5000)))),
    ("close-bad-reason", Scenario(NOTHING, (), Ending("closed", close_frame(1000, b"\xc3(")))),
    ("close-bad-reason-bad-code", Scenario(NOTHING, (), Ending("closed", close_frame(999, b"\xff")))),
    ("close-too-long", Scenario(NOTHING, (), Ending("closed", close_frame(1000, b"r" * 124)))),
    ("close-fragmented", Scenario(NOTHING, (), Ending("closed", frame(8, b"\x03\xe8", fin=False)))),
    ("close-mid-message", Scenario(NOTHING, (), Ending("closed", frame(1, b"{", fin=False) + close_frame(1000)))),
    ("close-rsv", Scenario(NOTHING, (), Ending("closed", frame(8, b"\x03\xe8", rsv=4)))),
    ("unmasked-text", Scenario(NOTHING, (), Ending("closed", frame(1, CALL, mask=None)))),
    ("unmasked-ping", Scenario(NOTHING, (), Ending("closed", frame(9, b"hi", mask=None)))),
    ("unmasked-close", Scenario(NOTHING, (), Ending("closed", frame(8, b"\x03\xe8", mask=None)))),
    ("reserved-opcode-3", Scenario(NOTHING, (), Ending("closed", frame(3, b"x")))),
    ("reserved-opcode-11", Scenario(NOTHING, (), Ending("closed", frame(11, b"")))),
    ("rsv1-text", Scenario(NOTHING, (), Ending("closed", frame(1, CALL, rsv=4)))),
    ("rsv3-ping", Scenario(NOTHING, (), Ending("closed", frame(9, b"p") + frame(9, b"q", rsv=1)))),
    ("lone-continuation", Scenario(NOTHING, (), Ending("closed", frame(0, b"x")))),
    ("text-inside-message", Scenario(NOTHING, (), Ending("closed", frame(1, b"[", fin=False) + frame(2, b"]")))),
    ("ping-too-long", Scenario(NOTHING, (), Ending("closed", frame(9, b"p" * 126)))),
    ("ping-fragmented", Scenario(NOTHING, (), Ending("closed", frame(9, b"p", fin=False)))),
    ("pong-fragmented", Scenario(NOTHING, (), Ending("closed", frame(10, b"p", fin=False) + frame(0, b"")))),
    ("oversize-announced", Scenario(NOTHING, (), Ending("closed", frame(2, b"", length=2**40)))),
    ("oversize-by-one", Scenario(NOTHING, (), Ending("closed", frame(2, b"!" * (WS_MAX_SIZE + 1))))),
    ("at-the-limit", Scenario(NOTHING, (), Ending("server-close", frame(2, b"!" * WS_MAX_SIZE), close_frame(1009)))),
    (
        "oversize-fragments",
        Scenario(NOTHING, (), Ending("closed", frame(1, b"!" * 3000, fin=False) + frame(0, b"x" * 1097))),
    ),
    (
        "ping-over-what-is-left",
        Scenario(NOTHING, (), Ending("closed", frame(2, b"!" * (WS_MAX_SIZE - 4), fin=False) + frame(9, b"12345"))),
    ),
    ("utf8-bad", Scenario(NOTHING, (one(frame(1, CALL), 1),), Ending("closed", frame(9, b"p") + frame(1, b"\xff")))),
    ("utf8-truncated", Scenario(NOTHING, (), Ending("closed", fragments(1, b'"\xe2\x82', [1, 2])))),
    ("utf8-bad-in-fragment", Scenario(NOTHING, (), Ending("closed", fragments(1, b"[1,\xed\xa0\x80]", [3, 4, 5])))),
    ("utf8-overlong", Scenario(NOTHING, (), Ending("closed", frame(1, b"\xc0\xaf")))),
    ("server-close", Scenario(NOTHING, (), Ending("server-close", frame(2, BIG), close_frame(1009)))),
    (
        "server-close-fragmented",
        Scenario(
            NOTHING,
            (),
            Ending(
                "server-close",
                fragments(1, BIG, [1000, 2000], [frame(9, b"a"), frame(10, b"b")]),
                frame(9, b"c") + frame(1, CALL) + close_frame(1000) + frame(9, b"after"),
            ),
        ),
    ),
    ("server-close-empty-reply", Scenario(NOTHING, (), Ending("server-close", frame(1, BIG), close_frame(None)))),
    ("server-close-bad-reply", Scenario(NOTHING, (), Ending("server-close", frame(1, BIG), close_frame(1005)))),
    (
        "server-close-fault-reply",
        Scenario(NOTHING, (), Ending("server-close", frame(1, BIG), frame(3, b"") + b"\x00" * 9)),
    ),
]


@pytest.mark.parametrize("scenario", [s for _, s in TABLE], ids=[name for name, _ in TABLE])
async def test_adversarial_streams_look_the_same(pair: Pair, scenario: Scenario) -> None:
    await compare(pair, scenario)


# ---------------------------------------------------------------- random streams


@st.composite
def controls(draw: Any, mask: bytes, size: int = 2) -> Step:
    """Pings and pongs, as they may come anywhere (between fragments too)."""
    items = draw(st.lists(st.tuples(st.sampled_from([9, 10]), st.binary(max_size=125)), max_size=size))
    return Step(b"".join(frame(op, p, mask=mask) for op, p in items), 0, tuple(p for op, p in items if op == 9))


@st.composite
def message(draw: Any, mask: bytes, with_controls: bool = True) -> Step:
    """A data message the server must take (a call, a notification, garbage), maybe fragmented; or a lone ping/pong."""
    kind = draw(st.sampled_from(["call", "call", "garbage", "text-garbage", "binary-garbage", "control"]))
    if kind == "control":
        if not with_controls:
            return Step(b"")
        return draw(controls(mask, 1))  # type: ignore[no-any-return]
    opcode = draw(st.sampled_from([1, 2]))
    if kind == "call":
        method = draw(st.sampled_from(["echo", "echo", "no_such_method"]))
        payload, answers = call(draw(st.integers(0, 2**31)), draw(st.text(max_size=24)), method), 1
    elif kind == "garbage":
        payload, answers = draw(st.sampled_from(GARBAGE))
    elif kind == "text-garbage":
        payload, answers = ("!" + draw(st.text(max_size=24))).encode(), 1
    else:
        opcode, payload, answers = 2, b"!" + draw(st.binary(max_size=24)), 1
    cuts = draw(st.lists(st.integers(0, len(payload)), max_size=3))
    between: List[bytes] = []
    pings: Tuple[bytes, ...] = ()
    if with_controls:
        for _ in cuts:
            step = draw(controls(mask))
            between.append(step.data)
            pings += step.pings
    return Step(fragments(opcode, payload, cuts, between, mask), answers, pings, messages=1)


@st.composite
def fault(draw: Any, mask: bytes) -> bytes:
    """A frame (or two) that makes either parser fail the connection; never about UTF-8."""
    kind = draw(
        st.sampled_from(
            [
                "unmasked",
                "opcode",
                "rsv",
                "continuation",
                "interleaved",
                "long-control",
                "fragmented-control",
                "oversize",
                "oversize-fragments",
                "close-mid-message",
                "bad-close",
            ]
        )
    )
    payload = draw(st.binary(max_size=20))
    if kind == "unmasked":
        return frame(draw(st.sampled_from([0, 1, 2, 8, 9, 10])), payload, mask=None)
    if kind == "opcode":
        return frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), payload, mask=mask)
    if kind == "rsv":
        return frame(draw(st.sampled_from([1, 2, 9, 10])), payload, rsv=draw(st.integers(1, 7)), mask=mask)
    if kind == "continuation":
        return frame(0, payload, fin=draw(st.booleans()), mask=mask)
    if kind == "interleaved":
        return frame(2, payload, fin=False, mask=mask) + frame(draw(st.sampled_from([1, 2])), b"", mask=mask)
    if kind == "long-control":
        return frame(draw(st.sampled_from([8, 9, 10])), b"\x03\xe8" + b"r" * draw(st.integers(124, 200)), mask=mask)
    if kind == "fragmented-control":
        return frame(draw(st.sampled_from([8, 9, 10])), b"\x03\xe8", fin=False, mask=mask)
    if kind == "oversize":
        return frame(
            draw(st.sampled_from([1, 2])), b"", length=draw(st.integers(WS_MAX_SIZE + 1, 2**63 - 1)), mask=mask
        )
    if kind == "oversize-fragments":
        first = draw(st.integers(0, WS_MAX_SIZE))
        return frame(2, b"!" * first, fin=False, mask=mask) + frame(
            draw(st.sampled_from([0, 9])), b"", length=WS_MAX_SIZE - first + 1, mask=mask
        )
    if kind == "close-mid-message":
        return frame(1, b"[", fin=False, mask=mask) + close_frame(1000, b"", mask)
    code = draw(st.sampled_from(INVALID_CLOSE_CODES + VALID_CLOSE_CODES))
    reason = (
        draw(st.sampled_from(BAD_UTF8)) if code in VALID_CLOSE_CODES else draw(st.sampled_from([b"", b"x", b"\xff"]))
    )
    return draw(st.sampled_from([close_frame(code, reason, mask), frame(8, b"\x03", mask=mask)]))  # type: ignore[no-any-return]


@st.composite
def client_close(draw: Any, mask: bytes) -> bytes:
    if draw(st.booleans()):
        return close_frame(None, b"", mask)
    reason = draw(st.text(max_size=40)).encode()[:123]
    return close_frame(draw(st.sampled_from(VALID_CLOSE_CODES)), reason.decode(errors="ignore").encode(), mask)


@st.composite
def bad_text(draw: Any, mask: bytes) -> bytes:
    """A whole text message that is not UTF-8, fragments anywhere, nothing between them."""
    payload = (
        draw(st.text(max_size=10)).encode() + draw(st.sampled_from(BAD_UTF8)) + draw(st.text(max_size=10)).encode()
    )
    return fragments(1, payload, draw(st.lists(st.integers(0, len(payload)), max_size=3)), (), mask)


@st.composite
def endings(draw: Any, mask: bytes) -> Ending:
    kind = draw(st.sampled_from(["quiet", "fault", "close", "utf8", "server-close"]))
    pings = draw(controls(mask))
    before = pings.data  # pings before the end are answered first by both
    trailing = draw(st.binary(max_size=16) | message(mask).map(lambda step: step.data))
    if kind == "quiet":
        dangling = draw(
            st.sampled_from(
                [b"", frame(1, b'["\xe2\x82', fin=False, mask=mask), frame(2, b"\xff", fin=False, mask=mask)]
            )
        )
        return Ending("quiet", before + dangling, pings=pings.pings)
    if kind == "fault":
        return Ending("closed", before + draw(fault(mask)) + trailing)
    if kind == "close":
        return Ending("closed", before + draw(client_close(mask)) + trailing)
    if kind == "utf8":
        return Ending("closed", before + draw(bad_text(mask)))  # nothing after it: see the module docstring
    size = draw(st.integers(RPC_MAX_SIZE + 1, WS_MAX_SIZE))
    big = b"!" * size
    trigger = fragments(
        draw(st.sampled_from([1, 2])), big, draw(st.lists(st.integers(0, size), max_size=2)), [before, before], mask
    )
    reply = draw(controls(mask)).data + draw(
        st.sampled_from([b"", frame(1, CALL, mask=mask), frame(2, b"[]", mask=mask)])
    )
    reply += draw(client_close(mask) | fault(mask)) + trailing
    return Ending("server-close", trigger, reply)


@st.composite
def scenarios(draw: Any) -> Tuple[Scenario, bytes]:
    mask = draw(st.sampled_from([MASK, b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"]) | st.binary(min_size=4, max_size=4))
    early = concat(draw(st.lists(message(mask, with_controls=False), max_size=2)))
    steps: List[Step] = []
    for items in draw(st.lists(st.lists(message(mask), min_size=1, max_size=4), max_size=3)):
        step = concat(items)
        cuts = tuple(draw(st.lists(st.integers(0, len(step.data)), max_size=4)))
        steps.append(step._replace(cuts=cuts))
    return Scenario(early, tuple(steps), draw(endings(mask))), mask


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
async def test_random_streams_look_the_same(pair: Pair, drawn: Tuple[Scenario, bytes]) -> None:
    scenario, mask = drawn
    await compare(pair, scenario, mask)


# ---------------------------------------------------------------- the server's own closes


async def test_keepalive_pings_are_answered_through_our_reader(twin: Any) -> None:
    """uvicorn's keepalive pings; our reader hands the client's pongs to uvicorn, which must match them.

    A pong that does not reach uvicorn's ``handle_pong`` would end the
    connection with 1011 after the first ping instead of the second.
    """

    async def session(url: str) -> Seen:
        seen: Seen = []
        reader, writer, _ = await raw_connection(url)
        try:
            got = await read_frame(reader)
            assert got is not None
            seen.append((got[0], len(got[1])))
            writer.write(frame(10, b"unsolicited") + frame(10, got[1]))  # a stray pong first: ignored
            got = await read_frame(reader)
            assert got is not None
            seen.append((got[0], len(got[1])))  # the next ping; this one stays unanswered
            seen.extend(await read_to_eof(reader))
        finally:
            writer.close()
        return seen

    # A timeout with room for a loaded machine: the pong goes back at once, the test waits for the second ping's.
    servers = start_pair(ws_ping_interval=0.1, ws_ping_timeout=1.0)
    try:
        direct, reference = await asyncio.gather(session(servers.direct.url()), session(servers.reference.url()))
    finally:
        await asyncio.gather(asyncio.to_thread(servers.direct.stop), asyncio.to_thread(servers.reference.stop))
    assert direct == reference == [(9, 4), (9, 4), (8, 1011), "eof"]
    assert not servers.reference_seen[0][1]
    assert servers.direct_seen[0][1] or servers.direct_seen[0][0] != "WebSocketsSansIOProtocol"


async def test_shutdown_closes_with_1012_mid_message(twin: Any) -> None:
    """uvicorn's shutdown sends 1012 through ``conn``, our reader or its own, with half a message read."""

    async def opened(url: str) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer, _ = await raw_connection(url)
        writer.write(frame(1, CALL) + frame(1, b'["\xe2', fin=False) + frame(9, BARRIER))
        seen = await read_owed(reader, 1, [BARRIER])
        assert seen[3] == [], seen
        return reader, writer

    servers = start_pair()
    try:
        connections = await asyncio.gather(opened(servers.direct.url()), opened(servers.reference.url()))
    finally:
        await asyncio.gather(asyncio.to_thread(servers.direct.stop), asyncio.to_thread(servers.reference.stop))
    try:
        direct, reference = await asyncio.gather(*(read_to_eof(reader) for reader, _ in connections))
    finally:
        for _, writer in connections:
            writer.close()
    assert direct == reference == [(8, 1012), "eof"]
