"""Our frame codec under uvicorn's sans-I/O websockets protocol (uvicorn's default from 0.35).

Through ASGI, uvicorn runs every frame through ``websockets``' pure-Python
parser (a generator per frame: about half of the server's CPU per call with
64 calls in flight) and every answer through an ASGI message dict, a ``str``
decoded only to be encoded again and a ``websockets`` Frame. On a connection
that is open and uncompressed, :func:`take_over` puts our codec in both
places and leaves the rest to uvicorn:

* Reading: :class:`FastReader` stands in for uvicorn's ``ServerProtocol``
  (its ``conn``) on the read side. Data frames are parsed by our
  ``FrameParser`` (size limit from the header, masking, UTF-8 of text,
  fragments) and handed to uvicorn as the ``Frame`` events it expects, so its
  own ASGI queue, flow control and close rules still apply. A large text
  message goes as a binary one: its UTF-8 is checked already, our endpoint
  takes bytes, and uvicorn would otherwise decode it into a ``str`` (a copy of
  the whole message, and a second check) only for msgspec to read it again. Control frames
  (ping, pong, close) are passed to the real ``ServerProtocol`` (rebuilt,
  masked, as the client sent them), so pongs, the keepalive and the closing
  handshake stay uvicorn's. A fault closes the connection through
  ``ServerProtocol.fail`` with our close code, as a fault of its own would.
* Writing: :func:`write_direct` frames an answer with ``build_frame`` and
  writes it to uvicorn's transport while the connection is open and writable;
  otherwise the caller goes through ASGI ``send``, which waits, refuses or
  raises as uvicorn decides.

It is best effort, and conservative: any other uvicorn protocol, a
permessage-deflate connection, a parser caught mid-frame, or an ASGI
middleware that wraps the connection's ``receive`` (as OpenTelemetry's does)
keeps the whole connection on ASGI.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from . import _accel

__all__ = ["FastReader", "harden_keepalive", "take_over", "write_direct"]

_OP_TEXT = 1
_OP_BINARY = 2
#: Our parser's size limit when uvicorn has none (``ws_max_size=None``).
_UNLIMITED = 2**62
#: From this size on, a message is large: read as bytes, written as its header and itself (no copy).
_SPLIT = 64 * 1024


def take_over(server: Any) -> Any:
    """Put our codec in uvicorn's ``server`` (its protocol object).

    Returns uvicorn's own ``ServerProtocol`` (what :func:`write_direct` checks
    the connection's state on) when our writes may go to its transport, else None.

    Called once the connection is accepted. The read side is taken over only
    while ``websockets``' parser waits at a frame boundary with nothing
    buffered: a client does not send frames before the handshake's answer, so
    that is the usual case, and anything else stays with uvicorn.
    """
    conn = getattr(server, "conn", None)
    if (
        type(server).__name__ != "WebSocketsSansIOProtocol"
        or conn is None
        or isinstance(conn, FastReader)
        or getattr(conn, "extensions", True)  # permessage-deflate frames are not ours to build
        or getattr(conn, "state", None) is not State.OPEN
        or not all(hasattr(server, name) for name in ("close_sent", "writable", "transport", "handle_events"))
        # Our writes stop at its `writable` flag: uvicorn releases whose protocol
        # never clears it (no pause_writing of its own, as in 0.39) would let a
        # peer that does not read grow the write buffer without bound.
        or getattr(type(server), "pause_writing", None) is asyncio.BaseProtocol.pause_writing
    ):
        return None
    if _at_frame_boundary(conn):
        max_size = getattr(conn, "max_message_size", None)
        # 0 is a limit (every non-empty frame is too big), as websockets has it; None is none.
        server.conn = FastReader(conn, _accel.impl, _UNLIMITED if max_size is None else max_size)
    return conn


def harden_keepalive(server: Any) -> None:
    """Make uvicorn's keepalive timeout drop the connection, not wait for it.

    On a missed pong uvicorn's sans-I/O protocol sends a close frame and calls
    ``transport.close()``, which waits for the write buffer to drain first. A
    peer that neither reads nor answers pings never drains it: the connection,
    its handlers and its buffers stayed (35 MB and 1000 tasks 10 s later). A
    peer that missed its pong is gone as far as we can tell, so after uvicorn's
    own close, the transport is aborted (RFC 6455 7.1.7: fail the connection).
    Best effort: other uvicorn protocols keep their own rules.
    """
    original = getattr(server, "keepalive_timeout", None)
    transport = getattr(server, "transport", None)
    if original is None or transport is None or type(server).__name__ != "WebSocketsSansIOProtocol":
        return

    def keepalive_timeout() -> None:
        try:
            original()
        finally:
            if not getattr(server, "disconnected", False):
                transport.abort()

    server.keepalive_timeout = keepalive_timeout


def _at_frame_boundary(conn: Any) -> bool:
    """Whether ``websockets``' parser holds nothing: no bytes, no events, no message under way."""
    reader = getattr(conn, "reader", None)
    parser = getattr(conn, "parser", None)
    buffered: Any = getattr(reader, "buffer", None)
    if (
        buffered is None
        or len(buffered)
        or parser is None
        or getattr(conn, "events", None)
        or getattr(conn, "current_size", None) is not None
        or getattr(conn, "expect_continuation_frame", True)
    ):
        return False
    # The parser is a generator; at a boundary, the innermost one it waits in is StreamReader.at_eof.
    inner = parser
    while getattr(inner, "gi_yieldfrom", None) is not None:
        inner = inner.gi_yieldfrom
    return getattr(getattr(inner, "gi_code", None), "co_name", "") == "at_eof"


def write_direct(server: Any, conn: Any, frame_opcode: int, data: bytes, build: Any) -> bool:
    """Write one frame to uvicorn's transport if the connection is open and writable; whether it did.

    A large frame goes out as its header and ``data`` itself (``writelines``:
    one ``writev`` on uvloop), rather than a copy of ``data`` behind a header.
    """
    if (
        conn.state is State.OPEN
        and not server.close_sent
        and server.writable.is_set()
        and not server.transport.is_closing()
    ):
        n = len(data)
        if n < _SPLIT or type(data) is not bytes:
            server.transport.write(build(frame_opcode, data, False))
        else:
            server.transport.writelines((_header(frame_opcode, n), data))
        return True
    return False


def _header(opcode: int, n: int) -> bytes:
    """The header of a whole, unmasked frame of ``n`` bytes (a server's; ``build_frame``'s bytes, payload aside)."""
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") if n >= 126 else bytes((0x80 | opcode, n))
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")


class FastReader:
    """uvicorn's ``conn`` on the read side: our parser for data, the real ``ServerProtocol`` for the rest."""

    __slots__ = ("_build", "_conn", "_error", "_events", "_parser")

    def __init__(self, conn: Any, impl: Any, max_size: int) -> None:
        self._conn = conn
        # One twin for both: the frames we parse and the ones we rebuild for the real protocol.
        self._parser = impl.FrameParser(max_size, True)
        self._build = impl.build_frame
        self._events: List[Frame] = []
        self._error: Optional[BaseException] = None

    def receive_data(self, data: bytes) -> None:
        events = self._events
        for opcode, payload in self._parser.feed(data):
            if opcode == _OP_TEXT and len(payload) < _SPLIT:
                events.append(Frame(Opcode.TEXT, payload))
            elif opcode <= _OP_BINARY:
                # A large text message too, as bytes: our parser checked its UTF-8, our endpoint
                # decodes bytes, and uvicorn would make a str of it first (a copy and a second
                # check). A small one stays text: it costs less through uvicorn and our endpoint.
                events.append(Frame(Opcode.BINARY, payload))
            else:
                # Ping, pong, close: the real protocol answers them and tracks the
                # closing handshake. It gets them as a client sends them (masked).
                conn = self._conn
                conn.receive_data(self._build(opcode, payload, True))
                events.extend(conn.events_received())
        error = self._parser.error
        if error is not None and self._error is None:
            self._error = error
            self._conn.fail(error.code, error.reason)

    def events_received(self) -> List[Frame]:
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    @property
    def parser_exc(self) -> Optional[BaseException]:
        return self._error or self._conn.parser_exc

    def receiving(self) -> bool:
        """Part of a frame or of a fragmented message waits for the rest (the slowloris watch)."""
        return bool(self._parser.receiving())

    def __getattr__(self, name: str) -> Any:
        # Everything else (handshake, sending, close state) is the real protocol's.
        return getattr(self._conn, name)
