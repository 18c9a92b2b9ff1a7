"""The native WebSocket path: an ``asyncio.Protocol`` over the frame codec of ``_speedups``.

Both the native server (:mod:`fastwsrpc.server`) and the client's default
transport use :class:`NativeWebSocket`: it *is* the channel's
:class:`~fastwsrpc.transport.Transport`, so a frame goes from ``data_received``
through ``FrameParser.feed`` to the channel with no ASGI message, no Starlette
object and no ``websockets`` connection in between. The opening handshake is
not the hot path: it is parsed and answered by ``websockets``' own HTTP parser
and sans-I/O ``ServerProtocol`` / ``ClientProtocol`` (their header checks,
accept key and subprotocol rules), then the codec takes over the byte stream,
including any frame the peer sent right behind its handshake.

Flow control is TCP's, as the transport contract asks: at most ``_HIGH``
messages wait for the channel, then the socket stops being read
(``pause_reading``) until the channel has taken them down to ``_LOW``. Outgoing
frames go through the :class:`~fastwsrpc.sender.CoalescingSender` the client's
``websockets`` transport uses too (the first frame of a loop turn at once, the
rest in few writes; a send waits while the socket's write buffer is above its
high-water mark). While the channel's budget has room,
incoming messages are pushed to its reader straight from ``data_received`` (see
``RpcChannel.run``). Keepalive uses real protocol pings: every ``ping_interval``
seconds a ping, and no pong within ``ping_timeout`` drops the connection (close
1011). A side whose peer pinged it since its last turn sends none: that ping and
our pong were an exchange both ways already, and with both sides pinging (our
server and client both do, by default) the idle traffic would be twice what
keeps the connection alive. A peer that stops pinging is pinged again on the
next turn, so a dead one is still found, within two turns and ``ping_timeout``.
A server skips its first turn, so that a client that pings keeps the pinging
and the server, holding the many connections, only answers.

permessage-deflate (RFC 7692) is negotiated by ``websockets``' own extension
factories (:func:`server_extensions`, :func:`client_extensions`), whose
agreement is read into a :class:`Compression` and then dropped (the zlib
objects websockets makes for it with it): the codec inflates (``FrameParser``'s
``window_bits``) and :meth:`NativeWebSocket.send` deflates messages of
``threshold`` bytes or more, each side making its zlib object on its first
compressed message only. See docs/guide/compression.md.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import sys
import zlib
from collections import deque
from random import getrandbits
from types import MappingProxyType
from typing import Any, Callable, Deque, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, Union, cast

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidMessage
from websockets.extensions.base import ClientExtensionFactory, ServerExtensionFactory
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request, Response
from websockets.streams import StreamReader
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

from . import _accel
from .config import DEFAULT_SERVER_WINDOW_BITS, CompressionConfig, compression_config
from .errors import RpcMessageTooLargeError
from .frames import FrameError
from .logger import get_logger
from .sender import WRITE_HIGH_WATER, CoalescingSender
from .transport import CLOSE_NORMAL, TransportClosed
from .wheel import wheel_for

__all__ = ["Compression", "NativeWebSocket", "client_extensions", "connect_native", "server_extensions"]

logger = get_logger("native")

CONNECTING, OPEN, CLOSING, CLOSED = range(4)

#: Messages waiting for the channel before the socket stops being read, and when it resumes.
_HIGH = 64
_LOW = 16
#: Bytes of an HTTP handshake request or response we keep before giving up on it.
_MAX_HANDSHAKE = 64 * 1024

_OP_TEXT = 1
_OP_BINARY = 2
_OP_CLOSE = 8
_OP_PING = 9
_OP_PONG = 10
#: The threshold of a connection without compression: no message reaches it.
_NEVER = sys.maxsize
#: From this size on, a server's frame goes out as its header and the message itself (no copy).
_SPLIT = 64 * 1024


#: The pings of a connection with none waiting for its pong: an empty mapping, shared (a dict each otherwise).
_NO_PINGS = cast(Dict[bytes, "asyncio.Future[float]"], MappingProxyType({}))


def _header(opcode: int, n: int) -> bytes:
    """The header of a whole, unmasked frame of ``n`` bytes (``build_frame``'s bytes, payload aside)."""
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") if n >= 126 else bytes((0x80 | opcode, n))
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")


class Compression(NamedTuple):
    """What permessage-deflate agreed on one connection, as this side sees it (RFC 7692 parameters).

    ``local``: our deflater (the window we compress with, and whether we start
    every message afresh); ``remote``: the peer's, which our inflater follows.
    """

    local_max_window_bits: int
    remote_max_window_bits: int
    local_no_context_takeover: bool
    remote_no_context_takeover: bool


def _compress_settings(config: CompressionConfig) -> Dict[str, Any]:
    return {"level": config.level, "memLevel": config.mem_level}


def server_extensions(config: Optional[CompressionConfig]) -> Optional[List[ServerExtensionFactory]]:
    """The extension factories for a server's ``ServerProtocol``: none, or permessage-deflate within ``config``."""
    if config is None:
        return None
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=config.server_no_context_takeover,
            client_no_context_takeover=config.client_no_context_takeover,
            server_max_window_bits=config.server_max_window_bits or DEFAULT_SERVER_WINDOW_BITS,
            client_max_window_bits=config.client_max_window_bits or DEFAULT_SERVER_WINDOW_BITS,
            compress_settings=_compress_settings(config),
        )
    ]


def client_extensions(config: Optional[CompressionConfig]) -> Optional[List[ClientExtensionFactory]]:
    """The extension factories for a client's ``ClientProtocol``: none, or a permessage-deflate offer of ``config``."""
    if config is None:
        return None
    return [
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=config.server_no_context_takeover,
            client_no_context_takeover=config.client_no_context_takeover,
            server_max_window_bits=config.server_max_window_bits,
            client_max_window_bits=config.client_max_window_bits or True,
            compress_settings=_compress_settings(config),
        )
    ]


def agreed_compression(handshake: Union[ClientProtocol, Any]) -> Optional[Compression]:
    """What the handshake agreed, read off websockets' extension object, which is dropped with its zlib objects.

    websockets makes a compressor and a decompressor as it agrees (even for an
    idle connection); ours are made on the first compressed message, so those
    are let go at once, whatever holds the handshake object afterwards.
    """
    agreed: Optional[Compression] = None
    for extension in handshake.extensions:
        if isinstance(extension, PerMessageDeflate):
            agreed = Compression(
                extension.local_max_window_bits,
                extension.remote_max_window_bits,
                extension.local_no_context_takeover,
                extension.remote_no_context_takeover,
            )
    handshake.extensions = []
    return agreed


class NativeWebSocket(asyncio.Protocol):
    """One WebSocket connection on an asyncio transport; also the channel's Transport.

    Subclasses do the opening handshake (:class:`_ClientWebSocket` here,
    the server's in :mod:`fastwsrpc.server`) and call :meth:`_open` with what
    followed it on the wire.
    """

    # Slots: one of these per connection (an idle one's dict of 37 attributes was 1.6 kB).
    __slots__ = (
        "__weakref__",
        "_build",
        "_close_handle",
        "_close_rcvd",
        "_close_sent",
        "_deflate_args",
        "_deflater",
        "_end",
        "_fail_handle",
        "_feed",
        "_impl",
        "_loop",
        "_lost",
        "_messages",
        "_opcode",
        "_parked",
        "_parser",
        "_pending_error",
        "_ping_bucket",
        "_ping_deadline",
        "_pinged",
        "_pings",
        "_push_error",
        "_reading_paused",
        "_sender",
        "_sent_at",
        "_threshold",
        "_waiter",
        "close_rcvd_then_sent",
        "close_timeout",
        "compression",
        "max_size",
        "opcodes",
        "ping_interval",
        "ping_timeout",
        "push",
        "state",
        "subprotocol",
        "transport",
    )

    is_client = False

    def __init__(
        self,
        max_size: int,
        *,
        ping_interval: Optional[float] = None,
        ping_timeout: Optional[float] = None,
        close_timeout: float = 10.0,
        binary: bool = False,
        speedups: Any = None,
        keep_opcodes: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        impl: Any = speedups if speedups is not None else _accel.impl
        self._impl = impl
        self._build = impl.build_frame
        self.max_size = max_size
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._opcode = _OP_BINARY if binary else _OP_TEXT
        self.state = CONNECTING
        self.transport: Optional[asyncio.Transport] = None
        self.subprotocol: Optional[str] = None
        self._parser: Any = None
        self._feed: Callable[[bytes], List[Tuple[int, bytes]]] = _no_feed
        #: Messages read and not yet taken by receive(); made on first use (the channel takes
        #: them through ``push`` as they come, so most connections never queue one).
        self._messages: Optional[Deque[bytes]] = None
        #: When a deque (``keep_opcodes=True``): the opcode of each message :meth:`receive`
        #: will return, in order (1 text, 2 binary), for a raw application such as an echo.
        #: Only messages that are queued are recorded: leave ``push`` unset with it.
        self.opcodes: Optional[Deque[int]] = deque() if keep_opcodes else None
        self._waiter: Optional[asyncio.Future[None]] = None
        #: Called once there is something for a reader that parked (see :meth:`park`).
        self._parked: Optional[Callable[[], None]] = None
        self._end: Optional[BaseException] = None  # what receive raises once the stream is over
        self._reading_paused = False
        self._sender: CoalescingSender  # made with the socket's transport, in connection_made
        #: Set by a reader that can take a message at once (see RpcChannel.run):
        #: messages go to it straight from data_received, with no wake-up of the
        #: reader's task, whenever none are queued (order is kept).
        self.push: Optional[Callable[[bytes], None]] = None
        self._push_error: Optional[Exception] = None
        #: Done when TCP is gone: made by the first wait for it (``close``, ``wait_closed``), not by every connection.
        self._lost: Optional[asyncio.Future[None]] = None
        #: Pings waiting for their pong, by payload: a dict while one does (a few ms every ``ping_interval``).
        self._pings: Dict[bytes, asyncio.Future[float]] = _NO_PINGS
        self._sent_at = 0.0  # when the last ping went out: a pong answers it or a later one
        #: Where this connection waits for its next keepalive ping: a bucket of the loop's wheel
        #: (see fastwsrpc/wheel.py: one timer for every connection, not a TimerHandle each).
        self._ping_bucket: Optional[Set[Any]] = None
        self._ping_deadline: Optional[asyncio.TimerHandle] = None
        # The peer pinged us since our last turn: our own ping is not needed (see on_turn). A server
        # starts as if pinged: it leaves its first turn to the client, and a client that pings (ours
        # does) keeps the pinging, while the server only answers, which costs it less.
        self._pinged = not self.is_client
        self._close_handle: Optional[asyncio.TimerHandle] = None
        #: A protocol error behind messages the application has not read yet (see _on_events).
        self._pending_error: Optional[FrameError] = None
        self._fail_handle: Optional[asyncio.TimerHandle] = None
        self._close_rcvd: Optional[Tuple[int, str]] = None
        self._close_sent: Optional[Tuple[int, str]] = None
        #: Whether the peer started the closing handshake (it sent its close frame first).
        self.close_rcvd_then_sent = False
        #: What permessage-deflate agreed (``None``: no compression on this connection).
        self.compression: Optional[Compression] = None
        self._threshold = _NEVER  # messages of this many bytes or more are sent compressed
        self._deflater: Any = None  # zlib's compressor: made on the first compressed message
        self._deflate_args: Tuple[int, int, int] = (0, 0, 0)  # level, wbits, memLevel

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface without the base class: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._sender = CoalescingSender(self.transport.write, self._loop)

    def data_received(self, data: bytes) -> None:
        if self.state is CONNECTING:
            self._handshake_data(data)
            return
        events = self._feed(data)
        push = self.push
        if push is not None and len(events) == 1 and self.state is OPEN and not self._messages:
            # The common case, inlined (one message, handed straight to the reader): _on_events otherwise.
            opcode, payload = events[0]
            if opcode <= _OP_BINARY and self._parser.error is None:
                try:
                    push(payload)
                except Exception as exc:
                    self._push_failed(exc)
                return
        self._on_events(events)

    def eof_received(self) -> Optional[bool]:
        return None  # close the transport: a half-closed WebSocket has nothing more to say

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.state = CLOSED
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # The peer ended it. Python < 3.11's SSL transport does not count
            # itself closed then, and warns (ResourceWarning) when collected.
            transport.close()
        self._leave_wheel()
        for handle in (self._ping_deadline, self._close_handle, self._fail_handle):
            if handle is not None:
                handle.cancel()
        if self._end is None:
            self._end = TransportClosed(1006, f"connection lost{': ' + str(exc) if exc else ''}")
        self._wake()
        closed = self._closed_error()
        self._sender.connection_lost(closed)
        for ping in self._pings.values():
            if not ping.done():
                ping.set_exception(closed)
                ping.exception()
        self._pings = _NO_PINGS
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._sender.pause_writing()

    def resume_writing(self) -> None:
        self._sender.resume_writing()

    # ------------------------------------------------------------ opening
    def _handshake_data(self, data: bytes) -> None:  # pragma: no cover - subclasses handle it
        raise NotImplementedError

    def _open(
        self, rest: bytes, compression: Optional[Compression] = None, config: Optional[CompressionConfig] = None
    ) -> None:
        """The handshake is over: frames from here on, starting with ``rest`` (compressed, if agreed)."""
        self.state = OPEN
        if compression is not None and config is not None:
            self.compression = compression
            self._threshold = config.threshold
            self._deflate_args = (config.level, -compression.local_max_window_bits, config.mem_level)
            self._parser = self._impl.FrameParser(
                self.max_size,
                not self.is_client,
                compression.remote_max_window_bits,
                compression.remote_no_context_takeover,
            )
        else:
            self._parser = self._impl.FrameParser(self.max_size, not self.is_client)
        self._feed = self._parser.feed
        if self.ping_interval:
            self._ping_bucket = wheel_for(self._loop, self.ping_interval).add(self)
        if rest:
            self._on_events(self._feed(rest))

    # ------------------------------------------------------------ incoming frames
    def _on_events(self, events: List[Tuple[int, bytes]]) -> None:
        messages = self._messages
        for opcode, payload in events:
            if opcode <= _OP_BINARY:
                if self.state is OPEN:  # once closing, nobody will read them: never queue without bound
                    push = self.push
                    if push is not None and not messages:
                        try:
                            push(payload)
                        except Exception as exc:
                            self._push_failed(exc)
                    else:
                        if messages is None:
                            messages = self._messages = deque()
                        messages.append(payload)
                        if self.opcodes is not None:
                            self.opcodes.append(opcode)
            elif opcode == _OP_PING:
                if self.state is OPEN:
                    self._pinged = True
                    self._sender.send_control(self._build(_OP_PONG, payload, self.is_client))
            elif opcode == _OP_PONG:
                self._on_pong(payload)
            else:
                self._on_close_frame(payload)
        if messages:
            self._wake()
            if len(messages) >= _HIGH and not self._reading_paused and self.transport is not None:
                self._reading_paused = True
                self.transport.pause_reading()
        error = self._parser.error if self._parser is not None else None
        if error is not None and self._end is None and self._pending_error is None:
            if messages:
                # What came before the fault is the application's to read, and to answer,
                # before the connection fails (an echo of a message that preceded a bad
                # frame goes out before the close: Autobahn 3.2, 4.1.3, 5.15). It fails when
                # the application comes back for more, closes, or close_timeout passes.
                self._pending_error = error
                self._fail_handle = self._loop.call_later(self.close_timeout, self._fail_pending)
            else:
                self._on_frame_error(error)

    def _push_failed(self, exc: Exception) -> None:
        """The reader's own failure in ``push``: pushing stops, and ``receive()`` raises it there."""
        self.push = None
        self._push_error = exc
        self._wake()

    def _fail_pending(self) -> None:
        error, self._pending_error = self._pending_error, None
        if self._fail_handle is not None:
            self._fail_handle.cancel()
            self._fail_handle = None
        if error is not None and self._end is None:
            self._on_frame_error(error)

    def _on_close_frame(self, payload: bytes) -> None:
        code, reason = self._impl.parse_close(payload)
        self._close_rcvd = (code, reason)
        if self.state is OPEN:
            # The peer closes first: echo its frame (RFC 6455 5.5.1), as websockets does.
            self.close_rcvd_then_sent = True
            self._close_sent = (code, reason)
            self._sender.send_control(self._build(_OP_CLOSE, payload, self.is_client))
            self.state = CLOSING
        if self._end is None:
            self._end = TransportClosed(code, reason)
        self._wake()
        self._finish_closing()

    def _on_frame_error(self, error: FrameError) -> None:
        """The peer broke the protocol: say why with the close code, stop reading."""
        if error.code == 1009:
            # As on the FastAPI path, the channel closes with 1009 and logs the oversize.
            self._end = RpcMessageTooLargeError(f"{error}")
            self._wake()
            return
        self._end = TransportClosed(error.code, error.reason)
        logger.warning("closing the connection with %s (peer %s): %s", error.code, self.peer or "?", error.reason)
        if self.state is OPEN:
            self._send_close(error.code, error.reason)
        self._wake()
        self._finish_closing()

    def _finish_closing(self) -> None:
        """Both close frames are out (or the stream is dead): the server drops TCP now, a client waits for it."""
        if self.transport is None or self.state is CLOSED:
            return
        if not self.is_client:
            self.transport.close()
        elif self._close_handle is None:
            self._close_handle = self._loop.call_later(self.close_timeout, self._abort_transport)

    def _wake(self) -> None:
        """Something for the reader: a message queued, the end of the stream, a failure of ``push``."""
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._parked is not None:
            wake, self._parked = self._parked, None
            try:
                wake()
            except Exception:  # the reader's own failure: this callback (data_received, connection_lost) goes on
                logger.exception("waking the reader of %s failed", self.peer or "?")

    def park(self, wake: Callable[[], None]) -> bool:
        """The reader leaves while nothing waits for it (its task ends; ``push`` stays): ``wake()`` is
        called once, from this protocol's callbacks, when something does (see :meth:`_wake`).

        False, and nothing parked, if something waits already: :meth:`receive` it.
        """
        if self._messages or self._end is not None or self._push_error is not None or self._pending_error is not None:
            return False
        self._parked = wake
        return True

    # ------------------------------------------------------------ the Transport protocol
    async def receive(self) -> Union[str, bytes]:
        """The next whole message (text as UTF-8 bytes, already checked); raises when the stream is over."""
        messages = self._messages
        if not messages:
            if self._pending_error is not None:
                self._fail_pending()
            if self._end is not None:
                raise self._end
            if self._push_error is None:
                waiter = self._waiter = self._loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
            if self._push_error is not None:
                error, self._push_error = self._push_error, None
                raise error
            messages = self._messages  # made while we waited, maybe
            if not messages:
                assert self._end is not None
                raise self._end
        message = messages.popleft()
        if self._reading_paused and len(messages) <= _LOW and self.transport is not None:
            self._reading_paused = False
            if self._end is None:
                self.transport.resume_reading()
        return message

    async def send(self, data: bytes, opcode: int = 0) -> None:
        """Frame ``data`` for the sender (see :mod:`fastwsrpc.sender`); wait while the peer does not read.

        ``opcode``: 1 (text) or 2 (binary) for this message; 0, the default, is the
        connection's own (``binary=``).
        """
        if self.state is not OPEN:
            raise self._closed_error()
        sender = self._sender
        n = len(data)
        if n < self._threshold:
            if n < _SPLIT or self.is_client or type(data) is not bytes:
                sender.send(self._build(opcode or self._opcode, data, self.is_client))
            else:
                # Header and message written as they are, behind what is queued: no copy of a large message.
                sender.send_control(_header(opcode or self._opcode, n))
                sender.send_control(data)
        else:
            sender.send(self._build(opcode or self._opcode, self._deflate(data), self.is_client, True, True))
        if sender.paused:
            await sender.drain()

    def send_nowait(self, data: bytes) -> bool:
        """Frame ``data`` for the sender now, if that needs no wait: the fan-out's path (see topics.py).

        False (nothing sent) when the connection is not open, the peer is not
        reading (the sender is paused), or the message is one that :meth:`send`
        treats apart (compressed, or large): the caller then sends it as usual.
        """
        if self.state is not OPEN:
            return False
        sender = self._sender
        if sender.paused or len(data) >= self._threshold or len(data) >= _SPLIT:
            return False
        sender.send_alone(self._build(self._opcode, data, self.is_client))
        return True

    def _deflate(self, data: bytes) -> bytes:
        """One message's compressed payload (RFC 7692 7.2.1): a sync flush, its 4-byte tail taken off."""
        deflater = self._deflater
        if deflater is None:
            level, wbits, mem_level = self._deflate_args
            deflater = zlib.compressobj(level, zlib.DEFLATED, wbits, mem_level)
            assert self.compression is not None
            if not self.compression.local_no_context_takeover:
                self._deflater = deflater  # kept: the next message may refer to this one
        out: bytes = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]

    def _send_close(self, code: int, reason: str) -> None:
        payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:123]
        self._close_sent = (code, reason)
        self._sender.send_control(self._build(_OP_CLOSE, payload, self.is_client))
        self.state = CLOSING

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Closing handshake: send our close frame, wait (bounded) for the peer's and for TCP to end."""
        if self._pending_error is not None:
            self._fail_pending()  # the peer broke the protocol: that is the close code it gets
        if self.state is OPEN:
            self._send_close(code, reason)
            if self._reading_paused and self.transport is not None:
                self._reading_paused = False
                self.transport.resume_reading()  # the peer's close frame (or EOF) must be seen
            if self._end is None:
                self._end = TransportClosed(code, reason)
            self._wake()
            if self._parser is not None and self._parser.error is not None and self.transport is not None:
                self.transport.close()  # the stream is broken (oversize): the peer's answer could not be read
        elif self.state is CONNECTING:
            self._abort_transport()
        if self.state is CLOSED:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._lost_waiter()), self.close_timeout)
        except asyncio.TimeoutError:
            self._abort_transport()

    def abort(self) -> None:
        """Drop the TCP connection now: a stalled peer would never finish a closing handshake."""
        if self._end is None:
            self._end = TransportClosed(1006, "connection aborted")
        self._abort_transport()

    def _abort_transport(self) -> None:
        if self.transport is not None and self.state is not CLOSED:
            self.transport.abort()

    @property
    def peer(self) -> str:
        """``host:port`` of the other side, for log lines."""
        address = self.transport.get_extra_info("peername") if self.transport is not None else None
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{address[0]}:{address[1]}"
        return ""

    def receiving(self) -> bool:
        """Whether part of a frame or of a fragmented message waits for the rest (slowloris watch)."""
        return self._parser is not None and bool(self._parser.receiving())

    def _closed_error(self) -> TransportClosed:
        end = self._end
        if isinstance(end, TransportClosed):
            return end
        code, reason = self._close_rcvd or self._close_sent or (1006, "")
        return TransportClosed(code, reason)

    # ------------------------------------------------------------ websockets-like views (the client uses them)
    @property
    def close_code(self) -> Optional[int]:
        """The peer's close code once it sent one; 1006 once closed without one; ``None`` while open."""
        if self._close_rcvd is not None:
            return self._close_rcvd[0]
        return None if self.state is not CLOSED else 1006

    @property
    def close_reason(self) -> Optional[str]:
        """The peer's close reason once it sent one (see :attr:`close_code`)."""
        if self._close_rcvd is not None:
            return self._close_rcvd[1]
        return None if self.state is not CLOSED else ""

    async def wait_closed(self) -> None:
        """Until the TCP connection is gone."""
        if self.state is not CLOSED:
            await asyncio.shield(self._lost_waiter())

    def _lost_waiter(self) -> asyncio.Future[None]:
        if self._lost is None:
            self._lost = self._loop.create_future()
        return self._lost

    # ------------------------------------------------------------ pings
    async def ping(self, data: Optional[bytes] = None) -> asyncio.Future[float]:
        """Send a protocol ping; the future it returns resolves (latency in seconds) when its pong arrives."""
        if self.state is not OPEN:
            raise self._closed_error()
        payload = data if data is not None else _ping_payload()
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._waiting_pings()[payload] = waiter
        self._sent_at = self._loop.time()
        self._sender.send_control(self._build(_OP_PING, payload, self.is_client))
        return waiter

    def _on_pong(self, payload: bytes) -> None:
        """A pong answers its ping and every earlier one (RFC 6455 allows skipping pongs)."""
        if payload not in self._pings:
            return
        latency = self._loop.time() - self._sent_at
        for key in list(self._pings):
            waiter = self._pings.pop(key)
            if not waiter.done():
                waiter.set_result(latency)
            if key == payload:
                break
        if not self._pings:
            self._pings = _NO_PINGS
            if self._ping_deadline is not None:
                self._ping_deadline.cancel()
                self._ping_deadline = None

    def _waiting_pings(self) -> Dict[bytes, asyncio.Future[float]]:
        if self._pings is _NO_PINGS:
            self._pings = {}
        return self._pings

    def _leave_wheel(self) -> None:
        bucket, self._ping_bucket = self._ping_bucket, None
        if bucket is not None:
            bucket.discard(self)

    def on_turn(self) -> None:
        """Every ``ping_interval`` (the wheel's turn): a ping; no pong within ``ping_timeout`` drops the connection.

        None when the peer pinged us since the last turn (see the module's docstring).
        """
        if self.state is not OPEN:
            self._leave_wheel()
            return
        if self._ping_deadline is not None:
            return  # the last ping is still within its timeout
        if self._pinged:
            self._pinged = False
            return
        payload = _ping_payload()
        self._waiting_pings()[payload] = self._loop.create_future()
        self._sent_at = self._loop.time()
        self._sender.send_control(self._build(_OP_PING, payload, self.is_client))
        if self.ping_timeout:
            self._ping_deadline = self._loop.call_later(self.ping_timeout, self._ping_expired)

    def _ping_expired(self) -> None:
        self._ping_deadline = None
        logger.warning("no pong from %s within %s s: closing (1011)", self.peer or "?", self.ping_timeout)
        if self._end is None:
            self._end = TransportClosed(1011, "keepalive ping timeout")
        if self.state is OPEN:
            self._send_close(1011, "keepalive ping timeout")
        self._wake()
        self._abort_transport()


def _ping_payload() -> bytes:
    """Four bytes a pong must echo; they only tell our pings apart, so no system call (os.urandom) per ping."""
    return getrandbits(32).to_bytes(4, "big")


def _no_feed(data: bytes) -> List[Tuple[int, bytes]]:  # pragma: no cover - replaced at _open
    return []


# ---------------------------------------------------------------- the client side


class _ClientWebSocket(NativeWebSocket):
    """The client's connection: sends the upgrade request, checks the answer with ``ClientProtocol``."""

    __slots__ = (
        "_compression_config",
        "_handshake",
        "_reader",
        "_request",
        "_response_parser",
        "opened",
        "response",
    )

    is_client = True

    def __init__(
        self,
        handshake: ClientProtocol,
        request: Request,
        max_size: int,
        compression: Optional[CompressionConfig] = None,
        **options: Any,
    ) -> None:
        super().__init__(max_size, **options)
        self._compression_config = compression
        self._handshake = handshake
        self._request = request
        self._reader = StreamReader()
        self._response_parser = Response.parse(
            self._reader.read_line, self._reader.read_exact, self._reader.read_to_eof
        )
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self.response: Optional[Response] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake.send_request(self._request)
        assert self.transport is not None
        self.transport.write(b"".join(self._handshake.data_to_send()))

    def _handshake_data(self, data: bytes) -> None:
        self._reader.feed_data(data)
        self._advance()

    def _advance(self) -> None:
        try:
            next(self._response_parser)
        except StopIteration as done:
            response: Response = done.value
            self.response = response
            try:
                self._handshake.process_response(response)
            except InvalidHandshake as exc:
                self._fail_opening(exc)
                return
            self.subprotocol = self._handshake.subprotocol
            agreed = agreed_compression(self._handshake)
            rest = bytes(self._reader.buffer)
            self._reader.buffer.clear()
            if not self.opened.done():
                self.opened.set_result(None)
            self._open(rest, agreed, self._compression_config)
            return
        except Exception as exc:
            failure = InvalidMessage("did not receive a valid HTTP response")
            failure.__cause__ = exc
            self._fail_opening(failure)
            return
        if len(self._reader.buffer) > _MAX_HANDSHAKE:
            self._fail_opening(InvalidMessage("the HTTP response is too large"))

    def _fail_opening(self, exc: BaseException) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self._abort_transport()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.state is CONNECTING and not self.opened.done():
            self._reader.feed_eof()
            self._advance()  # a refusal without Content-Length ends at EOF
            if not self.opened.done():
                self.opened.set_exception(EOFError("connection closed during the opening handshake"))
        super().connection_lost(exc)


#: ``websockets.connect`` keywords the native client implements; any other one needs websockets' own transport.
NATIVE_CONNECT_KWARGS = frozenset(
    {
        "additional_headers",
        "user_agent_header",
        "origin",
        "subprotocols",
        "open_timeout",
        "ping_interval",
        "ping_timeout",
        "close_timeout",
        "max_size",
        "compression",
        # asyncio's create_connection
        "ssl",
        "sock",
        "server_hostname",
        "local_addr",
        "family",
        "proto",
        "flags",
        "happy_eyeballs_delay",
        "interleave",
        "ssl_handshake_timeout",
        "ssl_shutdown_timeout",
        "all_errors",
        "host",
        "port",
    }
)


async def connect_native(
    uri: str,
    *,
    additional_headers: Any = None,
    user_agent_header: Optional[str] = None,
    origin: Optional[str] = None,
    subprotocols: Optional[Sequence[str]] = None,
    open_timeout: Optional[float] = 10.0,
    ping_interval: Optional[float] = 20.0,
    ping_timeout: Optional[float] = 20.0,
    close_timeout: Optional[float] = 10.0,
    max_size: Optional[int] = 2**20,
    compression: Union[str, CompressionConfig, None] = None,
    ssl: Any = None,
    binary: bool = False,
    speedups: Any = None,
    keep_opcodes: bool = False,
    **create_connection: Any,
) -> NativeWebSocket:
    """Open a client connection (TCP, TLS, upgrade) the way ``websockets.connect`` does, on the native codec.

    Failures are ``websockets``' own exceptions (``InvalidStatus`` for an HTTP
    refusal, ``InvalidHandshake``, ``OSError``, ``TimeoutError``) so the client
    maps them to ours exactly as it does for the ``websockets`` transport.

    ``compression``: ``None`` (the default here, unlike ``websockets.connect``),
    ``"deflate"`` (permessage-deflate offered with :class:`CompressionConfig`'s
    defaults) or a :class:`CompressionConfig`. A server that declines the offer
    gets an uncompressed connection; ``compression`` on the connection says
    what was agreed.
    """
    config = compression_config(compression)
    wsuri = parse_uri(uri)
    if wsuri.secure:
        if ssl is None:
            ssl = _ssl.create_default_context()
    elif ssl is not None:
        raise ValueError("ssl= is for wss:// URIs only")
    handshake = ClientProtocol(
        wsuri,
        origin=Origin(origin) if origin is not None else None,
        subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
        extensions=client_extensions(config),
    )
    request = handshake.connect()
    if additional_headers is not None:
        items = additional_headers.items() if isinstance(additional_headers, Mapping) else additional_headers
        if isinstance(additional_headers, Headers):
            items = additional_headers.raw_items()
        request.headers.update(items)
    if user_agent_header is not None:
        request.headers.setdefault("User-Agent", user_agent_header)
    loop = asyncio.get_running_loop()
    connection = _ClientWebSocket(
        handshake,
        request,
        max_size if max_size is not None else 2**62,
        config,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout if close_timeout is not None else 10.0,
        binary=binary,
        speedups=speedups,
        keep_opcodes=keep_opcodes,
    )
    host = create_connection.pop("host", wsuri.host)
    port = create_connection.pop("port", wsuri.port)
    if create_connection.get("sock") is not None:
        host = port = None

    async def opening() -> None:
        await loop.create_connection(lambda: connection, host, port, ssl=ssl, **create_connection)
        await connection.opened

    try:
        await asyncio.wait_for(opening(), open_timeout)
    except BaseException:
        connection._abort_transport()
        raise
    return connection
