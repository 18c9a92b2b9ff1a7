"""The NATS broker's hot path: a NATS connection driven by hand, on an asyncio protocol.

Through nats-py, each message a node receives goes through its reader task, a
parser of regular expressions, an ``async`` dispatch, and each one it sends through
a queue to a flusher task: several task switches and about as much CPU as the rest
of a routed call, on both nodes. Here the bytes go from ``data_received`` to the
handler of their subscription, and a ``PUB`` is written from the step that makes it.

Only the cluster's own traffic uses it (requests, answers, one-way messages,
broadcasts, routed topics); presence, JetStream and the session records stay on
nats-py's connection. It speaks the core client protocol (``INFO``, ``CONNECT``,
``PUB``, ``SUB``, ``UNSUB``, ``MSG``, ``HMSG``, ``PING``/``PONG``, ``+OK``, ``-ERR``),
with the options :func:`supported` lists (user and password or token, in the URL or
as keywords; TLS; a client name). A broker given others (credentials files, nkeys,
JWT callbacks, several servers, WebSocket URLs) keeps nats-py for this path too.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

from .._version import __version__

__all__ = ["NatsConnection", "OnMessage", "open_connection", "supported"]

#: ``on_message(sid, subject, reply, data, status)``: one message of subscription ``sid``;
#: ``status`` is the header status (503: no responders), 0 without one.
OnMessage = Callable[[int, str, str, bytes, int], None]
#: nats.connect keywords this connection honours (the others that matter to it make the broker
#: keep nats-py; those about nats-py's own behaviour are harmless and ignored).
_SUPPORTED = {"name", "user", "password", "token", "tls", "tls_hostname"}
_HARMLESS = {
    "ping_interval",
    "max_outstanding_pings",
    "allow_reconnect",
    "max_reconnect_attempts",
    "reconnect_time_wait",
    "connect_timeout",
    "pending_size",
    "flusher_queue_size",
    "flush_timeout",
    "drain_timeout",
    "error_cb",
    "disconnected_cb",
    "closed_cb",
    "reconnected_cb",
    "discovered_server_cb",
    "lame_duck_mode_cb",
    "verbose",
    "pedantic",
    "skip_subject_validation",
}


def supported(url: str, options: Mapping[str, Any]) -> bool:
    """Whether a connection of this module can be opened with ``url`` and these nats.connect
    options (else the broker keeps nats-py for its hot path)."""
    if "," in url:
        return False
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("nats", "tls"):
        return False
    return all(key in _SUPPORTED or key in _HARMLESS for key in options) and not callable(options.get("token"))


class NatsConnection(asyncio.Protocol):
    """One NATS connection: commands written in order, messages handed to ``on_message`` as they are parsed.

    ``send`` writes at once the first command of an event-loop turn and holds the rest
    of the turn, written together when it ends. ``ping`` answers a future done on the
    matching ``PONG``: as the server handles one connection's commands in order, that
    proves every command written before it was taken (a ``SUB`` is in place). A ``PING``
    is also sent every ``timeout`` seconds: one left unanswered that long aborts the
    connection (the server hung, or the network did). ``on_lost`` is called once, however
    the connection ends.
    """

    def __init__(self, on_message: OnMessage, on_lost: Callable[[BaseException], None], timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._on_lost = on_lost
        self._timeout = timeout
        self._transport: Any = None
        self._buffer = bytearray()
        #: A message whose payload is awaited: ``(sid, subject, reply, header size, total size)``.
        self._payload: Optional[Tuple[int, str, str, int, int]] = None
        self._out: List[bytes] = []
        self._turn = False
        self._pongs: List[Tuple[asyncio.Future[None], float]] = []
        self._timer: Optional[asyncio.TimerHandle] = None
        self._stalled = False
        self.info: Dict[str, Any] = {}
        #: Done with the first ``INFO`` (the handshake waits for it).
        self.greeted: asyncio.Future[Dict[str, Any]] = self._loop.create_future()
        #: The last ``-ERR`` the server sent (the handshake reports it).
        self.error = ""
        self.max_payload = 1024 * 1024
        #: Why the connection ended (``None`` while open).
        self.lost: Optional[BaseException] = None

    # ---------------------------------------------------------------- protocol
    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        size = len(buffer)
        on_message = self._on_message
        try:
            while pos < size:
                pending = self._payload
                if pending is not None:
                    sid, subject, reply, head, total = pending
                    end = pos + total
                    if end + 2 > size:
                        break
                    status = _status(bytes(buffer[pos : pos + head])) if head else 0
                    payload = bytes(buffer[pos + head : end])
                    pos = end + 2
                    self._payload = None
                    on_message(sid, subject, reply, payload, status)
                    continue
                cut = buffer.find(b"\r\n", pos)
                if cut < 0:
                    break
                line = bytes(buffer[pos:cut])
                pos = cut + 2
                self._control(line)
        except Exception as exc:  # a protocol error (or a handler's bug): the stream cannot be trusted
            del buffer[:pos]
            self.abort(ConnectionError(f"NATS protocol error: {exc!r}"))
            return
        del buffer[:pos]
        if len(buffer) > 64 * 1024 * 1024 and self._payload is None:
            self.abort(ConnectionError("NATS protocol error: a control line without end"))

    def _control(self, line: bytes) -> None:
        op, _, rest = line.partition(b" ")
        op = op.upper()
        if op == b"MSG":
            args = rest.split()
            reply = args[2].decode() if len(args) == 4 else ""
            self._payload = (int(args[1]), args[0].decode(), reply, 0, int(args[-1]))
        elif op == b"HMSG":
            args = rest.split()
            reply = args[2].decode() if len(args) == 5 else ""
            self._payload = (int(args[1]), args[0].decode(), reply, int(args[-2]), int(args[-1]))
        elif op == b"PING":
            self.send(b"PONG\r\n")
        elif op == b"PONG":
            if self._pongs:
                future, _ = self._pongs.pop(0)
                if not future.done():
                    future.set_result(None)
        elif op == b"INFO":
            self.info = json.loads(rest)
            self.max_payload = int(self.info.get("max_payload", self.max_payload))
            if not self.greeted.done():
                self.greeted.set_result(self.info)
        elif op == b"-ERR":
            self.error = rest.decode("utf-8", "replace").strip().strip("'")
        elif op != b"+OK":
            raise ValueError(f"unknown operation {op!r}")

    def eof_received(self) -> Optional[bool]:
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.lost is not None:
            return
        if self._stalled:
            reason: BaseException = ConnectionError(f"no PONG from NATS within {self._timeout} s")
        elif self.error:
            reason = ConnectionError(f"NATS closed the connection: {self.error}")
        elif exc is not None:
            reason = ConnectionError(f"connection to NATS lost: {exc}")
        else:
            reason = ConnectionError("connection to NATS closed")
        self.lost = reason
        if self._timer is not None:
            self._timer.cancel()
        pongs, self._pongs = self._pongs, []
        futures: List[asyncio.Future[Any]] = [future for future, _ in pongs]
        futures.append(self.greeted)
        for future in futures:
            if not future.done():
                future.set_exception(reason)
                future.exception()  # retrieved: a keepalive's PING has nobody awaiting it
        self._out = []
        self._on_lost(reason)

    # ---------------------------------------------------------------- use
    def send(self, data: bytes) -> None:
        """Write one command (or several, joined): at once if it is the first of this turn."""
        if self.lost is not None:
            raise self.lost
        if self._turn:
            self._out.append(data)
            return
        self._turn = True
        self._loop.call_soon(self._end_turn)
        self._transport.write(data)

    def _end_turn(self) -> None:
        self._turn = False
        out = self._out
        if out and self.lost is None:
            self._out = []
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def publish(self, subject: bytes, data: bytes, reply: bytes = b"") -> None:
        if reply:
            self.send(b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(data), data))
        else:
            self.send(b"PUB %s %d\r\n%s\r\n" % (subject, len(data), data))

    def subscribe(self, subject: str, sid: int) -> None:
        self.send(b"SUB %s %d\r\n" % (subject.encode(), sid))

    def unsubscribe(self, sid: int) -> None:
        self.send(b"UNSUB %d\r\n" % sid)

    def ping(self) -> asyncio.Future[None]:
        """A future done on this ``PING``'s ``PONG`` (every command written before is taken)."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self.lost is not None:
            future.set_exception(self.lost)
            return future
        self._pongs.append((future, self._loop.time()))
        self.send(b"PING\r\n")
        return future

    def start_pinging(self) -> None:
        """From now on, a ``PING`` every ``timeout`` seconds; one unanswered that long aborts."""
        self._timer = self._loop.call_later(self._timeout, self._keepalive)

    def _keepalive(self) -> None:
        if self.lost is not None:
            return
        if self._pongs and self._loop.time() - self._pongs[0][1] > self._timeout:
            self._stalled = True
            self._transport.abort()
            return
        if not self._pongs:
            self.ping()
        self._timer = self._loop.call_later(self._timeout, self._keepalive)

    def abort(self, reason: Optional[BaseException] = None) -> None:
        if self.lost is None and self._transport is not None:
            if reason is not None:
                self.connection_lost(reason)
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None and self.lost is None:
            self._end_turn()
            self._transport.close()


async def _start_tls(loop: Any, transport: Any, conn: NatsConnection, context: ssl.SSLContext, hostname: str) -> Any:
    """The connection upgraded to TLS (the server's ``INFO`` came in the clear, as NATS does)."""
    return await loop.start_tls(transport, conn, context, server_hostname=hostname)


def _status(head: bytes) -> int:
    """The status of a header block (``NATS/1.0 503`` -> 503), 0 without one."""
    first = head.split(b"\r\n", 1)[0].split()
    if len(first) > 1 and first[1].isdigit():
        return int(first[1])
    return 0


async def open_connection(
    url: str,
    options: Mapping[str, Any],
    on_message: OnMessage,
    on_lost: Callable[[BaseException], None],
    timeout: float,
) -> NatsConnection:
    """Connect, greet (``INFO``, TLS if asked, ``CONNECT``) and wait for the server's ``PONG``.

    Raises ``ConnectionError`` (the server refused: bad credentials, ...) or ``OSError``;
    bounded by ``timeout`` at each step.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 4222
    loop = asyncio.get_running_loop()
    conn = NatsConnection(on_message, on_lost, timeout)
    transport, _ = await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), timeout)
    try:
        info = await asyncio.wait_for(asyncio.shield(conn.greeted), timeout)
        context: Optional[ssl.SSLContext] = options.get("tls")
        if context is None and (parts.scheme.lower() == "tls" or info.get("tls_required")):
            context = ssl.create_default_context()
        if context is not None:
            hostname = options.get("tls_hostname") or host
            upgraded: Any = await asyncio.wait_for(_start_tls(loop, transport, conn, context, hostname), timeout)
            if upgraded is None:  # pragma: no cover - a loop without TLS upgrades
                raise ConnectionError("this event loop cannot upgrade a connection to TLS")
            transport = upgraded
            conn.connection_made(transport)
        hello: Dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "lang": "python-fastwsrpc",
            "version": __version__,
            "protocol": 1,
            "headers": True,
            "no_responders": True,
        }
        if options.get("name"):
            hello["name"] = options["name"]
        user, password = options.get("user"), options.get("password")
        token = options.get("token")
        if user is None and parts.username is not None:
            if parts.password is None:
                token = token or unquote(parts.username)
            else:
                user, password = unquote(parts.username), unquote(parts.password)
        if user is not None and password is not None:
            hello["user"], hello["pass"] = user, password
        elif token is not None:
            hello["auth_token"] = token
        conn.send(b"CONNECT " + json.dumps(hello).encode() + b"\r\n")
        await asyncio.wait_for(conn.ping(), timeout)
    except BaseException:
        transport.abort()
        raise
    conn.start_pinging()
    return conn
