"""The Redis broker's hot path: a Redis connection driven by hand, on an asyncio protocol.

A routed call crosses Redis twice (the request, then the answer), each a ``PUBLISH``
on one node and a pushed message on the other. Through redis-py that is, on each
node, a pooled connection taken and given back per batch (with its lock, checks and
metrics), a task woken to write it, another woken to read the ``PUBLISH`` answer, and
the subscription's reader task woken to parse the message through several layers:
about as much CPU as the rest of the call, twice per call. Here the bytes go
straight from the protocol's ``data_received`` to the code that wants them, and a
``PUBLISH`` is written from the caller's own step, with no task in between.

Only the two connections of the hot path are ours (the node's subscription and its
``PUBLISH`` connection); every other command still goes through redis-py. Each is
opened by redis-py (so the URL's TLS, ACL user, password, credential provider and
client name apply as for any other connection), then taken over: its transport is
handed to a :class:`RespConnection`. That uses two private attributes of redis-py's
asyncio connection (``_reader`` and ``_writer``, present from redis-py 4.2 to 8);
:func:`take_over` raises a clear error if they are ever gone.

Replies are parsed by hiredis when it is installed (``redis[hiredis]``, what the
``fastwsrpc[redis]`` extra asks for), else by :class:`PyReader`, a RESP2 parser of
the few reply types Redis sends on these two connections.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Union

__all__ = ["PyReader", "ReplyError", "RespConnection", "command", "new_reader", "take_over"]

#: What a reply callback is given: the reply, or the exception that replaces it.
OnReply = Callable[[Any], None]
#: First element of a pushed (not asked for) message on a subscribed connection.
_PUSHED = (b"message", b"pmessage")


class ReplyError(Exception):
    """An error reply of Redis (``-ERR ...``), given to the callback in place of the value."""


class PyReader:
    """A RESP2 reader with hiredis' interface (``feed``, then ``gets`` until it answers ``False``).

    For when hiredis is not installed. It parses what Redis sends on the hot path's
    connections: integers, simple strings, errors (as :class:`ReplyError`), bulk strings
    and arrays of those (``None`` for a null bulk or array).
    """

    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def gets(self) -> Any:
        """The next complete reply, or ``False`` when the bytes fed so far end before it does."""
        try:
            reply, pos = self._parse(self._pos)
        except _Incomplete:
            return False
        self._pos = pos
        return reply

    def _line(self, pos: int) -> Any:
        end = self._buffer.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        return bytes(self._buffer[pos:end]), end + 2

    def _parse(self, pos: int) -> Any:
        buffer = self._buffer
        if pos >= len(buffer):
            raise _Incomplete
        kind = buffer[pos]
        line, pos = self._line(pos + 1)
        if kind == 0x3A:  # ':'
            return int(line), pos
        if kind == 0x24:  # '$'
            size = int(line)
            if size < 0:
                return None, pos
            if len(buffer) < pos + size + 2:
                raise _Incomplete
            return bytes(buffer[pos : pos + size]), pos + size + 2
        if kind == 0x2A:  # '*'
            count = int(line)
            if count < 0:
                return None, pos
            items: List[Any] = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        if kind == 0x2B:  # '+'
            return line, pos
        if kind == 0x2D:  # '-'
            return ReplyError(line.decode("utf-8", "replace")), pos
        raise ConnectionError(f"Redis protocol error: reply type byte {bytes([kind])!r}")


class _Incomplete(Exception):
    pass


def new_reader() -> Any:
    """hiredis' reader when installed (error replies as :class:`ReplyError`), else :class:`PyReader`."""
    try:
        import hiredis
    except ImportError:
        return PyReader()
    return hiredis.Reader(replyError=ReplyError)


def command(*args: bytes) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class RespConnection(asyncio.Protocol):
    """One Redis connection: commands written in order, replies handed to their callbacks in order.

    ``send`` writes a command at once when every command written before has been
    answered (and none was written at once in this event-loop turn), and otherwise
    holds it until the turn ends and they have been: then whatever is held leaves in
    one write. A call alone pays no delay; many in flight share writes, and each write
    wakes Redis (and, through it, the nodes its messages go to) once for all of them.
    (Holding only until the end of the turn batches little on the calling node, whose
    calls reach the cluster one per turn; holding only until the answers come batches
    little on the serving node, whose answers come many per turn.) Each reply goes to the callback given with
    its command (called from ``data_received``: it must not block). On a subscribed
    connection, pushed messages go to ``on_push`` instead.

    A connection whose oldest command waits more than ``timeout`` seconds for its reply
    is aborted (Redis hung, or the network did), as redis-py's ``socket_timeout`` would:
    every callback still waiting is then given a ``ConnectionError``, and ``on_lost``
    is called once, however the connection ended.
    """

    def __init__(
        self,
        on_lost: Callable[[BaseException], None],
        timeout: float,
        on_push: Optional[Callable[[List[Any]], None]] = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = new_reader()
        self._on_lost = on_lost
        self._on_push = on_push
        self._timeout = timeout
        self._transport: Any = None
        #: asyncio's StreamWriter of the transport, kept alive: collected, it would close the transport.
        self._writer: Any = None
        #: Commands held until those written before are answered (their callbacks are the
        #: last ``len(_out)`` of ``_waiting``).
        self._out: List[bytes] = []
        #: A command was written at once in this event-loop turn (the turn's others are held).
        self._turn = False
        self._waiting: Deque[OnReply] = deque()
        #: When the oldest waiting command was sent, or the last reply came (the stall check's clock).
        self._progress = 0.0
        self._timer: Optional[asyncio.TimerHandle] = None
        self._stalled = False
        #: Why the connection ended (``None`` while open).
        self.lost: Optional[BaseException] = None

    # ---------------------------------------------------------------- protocol
    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._timer = self._loop.call_later(self._check_every, self._check_stall)

    @property
    def _check_every(self) -> float:
        return max(0.05, self._timeout / 4)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        on_push = self._on_push
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a protocol error: the stream cannot be trusted any more
                self.abort(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                break
            if on_push is not None and type(reply) is list and reply and reply[0] in _PUSHED:
                on_push(reply)
            elif waiting:
                waiting.popleft()(reply)
        if waiting:
            self._progress = self._loop.time()
            self._release()

    def eof_received(self) -> Optional[bool]:
        return False  # close the transport: Redis closed the connection

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.lost is not None:
            return
        if self._stalled:
            reason: BaseException = ConnectionError(f"no reply from Redis within {self._timeout} s")
        elif exc is not None:
            reason = ConnectionError(f"connection to Redis lost: {exc}")
        else:
            reason = ConnectionError("connection to Redis closed")
        self.lost = reason
        if self._timer is not None:
            self._timer.cancel()
        waiting, self._waiting = self._waiting, deque()
        self._out = []
        for on_reply in waiting:
            on_reply(reason)
        self._on_lost(reason)

    # ---------------------------------------------------------------- use
    def send(self, data: bytes, on_reply: OnReply) -> None:
        """Write one command; ``on_reply`` gets its reply, or the exception that ends the
        connection first. Raises ``ConnectionError`` when the connection is gone already."""
        if self.lost is not None:
            raise self.lost
        waiting = self._waiting
        if not waiting and not self._turn:
            self._progress = self._loop.time()
            waiting.append(on_reply)
            self._transport.write(data)
            self._turn = True
            self._loop.call_soon(self._end_turn)
            return
        waiting.append(on_reply)
        self._out.append(data)

    def _end_turn(self) -> None:
        self._turn = False
        self._release()

    def _release(self) -> None:
        """Write what is held if everything written before has been answered."""
        out = self._out
        if out and len(self._waiting) == len(out) and self.lost is None:
            self._out = []
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    @property
    def waiting(self) -> int:
        """Commands sent whose reply has not come yet."""
        return len(self._waiting)

    def _check_stall(self) -> None:
        if self.lost is not None:
            return
        if self._waiting and self._loop.time() - self._progress > self._timeout:
            self._stalled = True
            self._transport.abort()
            return
        self._timer = self._loop.call_later(self._check_every, self._check_stall)

    def abort(self, reason: Optional[BaseException] = None) -> None:
        """Drop the connection now (what is still buffered is not sent)."""
        if self.lost is None and self._transport is not None:
            if reason is not None:
                self.connection_lost(reason)
            self._transport.abort()

    def close(self) -> None:
        """Close after what is buffered is written; callbacks still waiting get a ``ConnectionError``."""
        if self._transport is not None and self.lost is None:
            out, self._out = self._out, []
            if out:
                self._transport.write(b"".join(out))
            self._transport.close()


async def take_over(redis: Any, protocol: RespConnection) -> None:
    """Open a connection with redis-py (handshake, TLS and auth as configured), then hand its
    transport to ``protocol``. RESP2 whatever the client's own setting: the hot path parses RESP2."""
    pool = redis.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["protocol"] = 2
    conn = pool.connection_class(**kwargs)
    await conn.connect()
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None:  # pragma: no cover - a redis-py that changed its internals
        await conn.disconnect()
        raise RuntimeError(
            f"redis-py {getattr(__import__('redis'), '__version__', '?')} keeps no _writer on its asyncio "
            "connection: the RedisBroker's fast path does not support this version"
        )
    # From now on the transport is ours: redis-py must not read, write or close it.
    conn._reader = conn._writer = None
    protocol._writer = writer
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
