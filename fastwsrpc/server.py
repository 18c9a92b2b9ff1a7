"""WebSocketRpcServer: the native server, an ``asyncio.Protocol`` speaking to the channel directly.

No ASGI and no Starlette between the socket and the channel: bytes go from
``data_received`` through the frame codec of ``_speedups`` (compiled or pure)
into :class:`~fastwsrpc.channel.RpcChannel`. Everything else is the FastAPI
endpoint's: the server *is* a :class:`~fastwsrpc.endpoint.WebSocketRpcEndpoint`
(same keyword arguments, settings, limits, callbacks, subprotocol rule,
discovery, interceptors, topics and ``cluster``), only its socket differs.

What the native server adds, because it owns the socket:

* ``authenticate=``: an async callable given the :class:`HandshakeRequest`
  (path, path parameters such as ``{client_id}``, headers, query) before the
  upgrade; it returns the client's id (or ``None``) or raises to refuse with
  HTTP 403 (or the ``status`` the exception carries, e.g. 401).
* Real WebSocket pings from the server (``ping_interval`` / ``ping_timeout``),
  which Starlette cannot send.
* Several endpoints on one port: ``routes={"/admin": other_server}``; a path
  may be a template (``"/ws/{client_id}"``).
* ``compression=``: permessage-deflate (RFC 7692) when the client offers it
  (see docs/guide/compression.md).

``await server.serve(host, port)`` runs until cancelled or ``server.close()``;
``async with server.listen(host, port):`` serves for the block;
:func:`run` is the blocking one-liner (uvloop when installed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import ssl as _ssl
import sys
from contextlib import asynccontextmanager
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    FrozenSet,
    Generator,
    Iterator,
    List,
    Mapping,
    NoReturn,
    Optional,
    Sequence,
    Set,
    Tuple,
)
from urllib.parse import parse_qsl

from websockets.datastructures import Headers, MultipleValuesError
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import Subprotocol

from .channel import RpcChannel
from .config import CompressionConfig, compression_config
from .interceptors import FEATURES_HEADER, format_features, parse_features
from .logger import get_logger
from .methods import RpcMethodsBase
from .native import _MAX_HANDSHAKE, CONNECTING, NativeWebSocket, agreed_compression, server_extensions
from .origin import origin_refusal
from .service import RpcService
from .sessions import SESSION_HEADER, SESSION_QUERY, Session
from .transport import CLOSE_GOING_AWAY

__all__ = ["HandshakeRequest", "WebSocketRpcServer", "run"]

logger = get_logger("server")

#: The features agreed with clients, each combination once (subsets of what our interceptors need).
_AGREED: Dict[FrozenSet[str], FrozenSet[str]] = {}

Authenticate = Callable[["HandshakeRequest"], Awaitable[Any]]


class FrozenHeaders(Headers):
    """The opening request's headers as a connection keeps them: read-only, in one string.

    ``HandshakeRequest.headers`` lives as long as its connection (the context's
    ``request``). websockets' :class:`~websockets.datastructures.Headers` holds a
    dict of lists, a list of pairs and two strings per header: about 2.2 kB for
    a client's ten headers, for every idle connection. This holds the
    ``"Name: value\\r\\n"`` lines in one string and scans them on each lookup:
    lookups are rare (authentication, a method reading a header), the bytes are
    paid all the time. Reading is ``Headers``' own (a case-insensitive ``[]``
    that raises ``MultipleValuesError`` for a repeated name, ``get``,
    ``get_all``, ``raw_items``, iteration over lower-cased names, ``str``);
    changing it raises ``TypeError`` (``copy()`` gives a ``Headers`` to change).
    """

    __slots__ = ("_lines",)

    def __init__(self, headers: Headers) -> None:  # no Headers.__init__: no dict, no list
        # A name is a token and a value has no CR or LF (websockets checked both): one split undoes this.
        self._lines = "".join(f"{name}: {value}\r\n" for name, value in headers.raw_items())

    def raw_items(self) -> Iterator[Tuple[str, str]]:
        for line in self._lines.split("\r\n")[:-1]:
            name, _, value = line.partition(": ")
            yield name, value

    def get_all(self, key: str) -> List[str]:
        key = key.lower()
        return [value for name, value in self.raw_items() if name.lower() == key]

    def __getitem__(self, key: str) -> str:
        values = self.get_all(key)
        if len(values) == 1:
            return values[0]
        if values:
            raise MultipleValuesError(key)
        raise KeyError(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.get_all(key))

    def _names(self) -> Dict[str, None]:
        return dict.fromkeys(name.lower() for name, _ in self.raw_items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        mine: Dict[str, List[str]] = {}
        theirs: Dict[str, List[str]] = {}
        for pairs, lists in ((self.raw_items(), mine), (other.raw_items(), theirs)):
            for name, value in pairs:
                lists.setdefault(name.lower(), []).append(value)
        return mine == theirs

    def __str__(self) -> str:
        return self._lines + "\r\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.raw_items())!r})"

    def copy(self) -> Headers:
        """A ``Headers`` with the same items, to change."""
        return Headers(self.raw_items())

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the handshake's headers are read-only (copy() gives a Headers to change)")

    __setitem__ = __delitem__ = clear = update = set_insecure = _read_only


@dataclasses.dataclass(frozen=True)
class HandshakeRequest:
    """The opening handshake as ``authenticate=`` and ``identify=`` see it (nothing is upgraded yet).

    A connection keeps it (``context["request"]``) as long as it lasts: slots, no
    instance dict, and its headers in one string (:class:`FrozenHeaders`).
    """

    __slots__ = ("headers", "path", "path_params", "peer", "query", "query_string")

    #: The request path without the query string (``/ws/alice``).
    path: str
    #: Values of the route's ``{name}`` placeholders (``{"client_id": "alice"}``).
    path_params: Dict[str, str]
    #: Request headers, case-insensitive and read-only (``headers["authorization"]``; see :class:`FrozenHeaders`).
    headers: Headers
    #: Query parameters, the last value of each name (``?token=...``); ``query_string`` has them all.
    query: Dict[str, str]
    query_string: str
    #: ``host:port`` of the client.
    peer: str

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        """Copied and pickled through the constructor: a frozen instance's slots cannot be set one by one."""
        return type(self), tuple(getattr(self, field.name) for field in dataclasses.fields(self))


class _Route:
    """A path, possibly with ``{name}`` placeholders (one path segment each), and its server."""

    def __init__(self, template: str, server: WebSocketRpcServer) -> None:
        self.template = template
        self.server = server
        pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.regex = re.compile(f"^{pattern}$")

    def match(self, path: str) -> Optional[Dict[str, str]]:
        found = self.regex.match(path)
        return found.groupdict() if found is not None else None


class _ServerWebSocket(NativeWebSocket):
    """One accepted TCP connection: reads the upgrade request, then hands over to the server."""

    __slots__ = ("_open_handle", "_reader", "_request_bytes", "_request_parser", "_server", "opening_task", "request")

    def __init__(self, server: WebSocketRpcServer) -> None:
        super().__init__(
            server.settings.max_message_size,
            ping_interval=server.ping_interval,
            ping_timeout=server.ping_timeout,
            close_timeout=server.close_timeout,
            binary=server._binary,
            speedups=server.speedups,
        )
        self._server = server
        #: The request's bytes until the upgrade; None after (frames go to the parser).
        self._reader: Optional[StreamReader] = StreamReader()
        self._request_parser: Optional[Generator[None, None, Request]] = Request.parse(self._reader.read_line)
        self._open_handle: Optional[asyncio.TimerHandle] = None
        self._request_bytes = 0  # bytes received while the request was being read
        #: What decides the upgrade (authentication included): cancelled if open_timeout passes first.
        self.opening_task: Optional[asyncio.Task[None]] = None
        self.request: Optional[HandshakeRequest] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._open_handle = self._loop.call_later(self._server.open_timeout, self._opening_expired)

    def _opening_expired(self) -> None:
        if self.state is CONNECTING:
            self._abort_transport()
            task = self.opening_task
            if task is not None and not task.done():
                task.cancel()  # an authenticate that hangs must not outlive its connection

    def _handshake_data(self, data: bytes) -> None:
        if self._reader is None:
            return  # refused: its close is on the way
        if self._request_parser is None:
            self._reader.feed_data(data)  # behind the request, while authentication runs
            return
        self._request_bytes += len(data)
        self._reader.feed_data(data)
        try:
            next(self._request_parser)
        except StopIteration as done:
            self._request_parser = None
            if self._request_bytes - len(self._reader.buffer) > _MAX_HANDSHAKE:
                self._refuse_raw(431, f"request headers too large (over {_MAX_HANDSHAKE} bytes)")
                return
            assert self.transport is not None
            self.transport.pause_reading()  # nothing more until the upgrade is decided
            self._server._start_connection(self, done.value)
            return
        except Exception as exc:
            self._request_parser = None
            self._refuse_raw(400, f"malformed HTTP request: {exc}")
            return
        if self._request_bytes > _MAX_HANDSHAKE:
            self._request_parser = None
            self._refuse_raw(431, f"request headers too large (over {_MAX_HANDSHAKE} bytes)")

    def _refuse_raw(self, status: int, text: str) -> None:
        if self.transport is not None:
            response = ServerProtocol().reject(status, text + "\n")
            self.transport.write(response.serialize())
            self.transport.close()

    def take_rest(self) -> bytes:
        """What arrived behind the request (frames a client sent without waiting); the reader goes with it."""
        reader, self._reader = self._reader, None
        return bytes(reader.buffer) if reader is not None else b""

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._open_handle is not None:
            self._open_handle.cancel()
        super().connection_lost(exc)

    def accepted(
        self, response: Response, handshake: ServerProtocol, compression: Optional[CompressionConfig] = None
    ) -> None:
        """Write the 101 and switch to frames (compressed, if ``handshake`` agreed it within ``compression``)."""
        if self._open_handle is not None:
            self._open_handle.cancel()
            self._open_handle = None
        self.opening_task = None  # done with opening: the task may end, and go (while the connection lasts)
        handshake.send_response(response)
        assert self.transport is not None
        self.transport.write(b"".join(handshake.data_to_send()))
        self.subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        self._open(self.take_rest(), agreed_compression(handshake), compression)
        if self._end is None:
            self.transport.resume_reading()

    def refused(self, response: Response, handshake: ServerProtocol) -> None:
        handshake.send_response(response)
        if self.transport is not None:
            self.transport.write(b"".join(handshake.data_to_send()))
            self.transport.close()


class WebSocketRpcServer:
    """Serves an ``RpcMethodsBase`` over WebSocket on its own socket (see the module docstring).

    Takes every keyword argument of :class:`~fastwsrpc.endpoint.WebSocketRpcEndpoint`
    plus ``authenticate``, ``ping_interval`` / ``ping_timeout`` (seconds; ``None``
    turns server pings off), ``open_timeout`` (the opening handshake, authentication
    included), ``close_timeout``, ``routes``, ``speedups`` (a twin, for tests) and
    ``compression``: ``"deflate"`` (the default: permessage-deflate when the client
    offers it, with :class:`~fastwsrpc.config.CompressionConfig`'s defaults), a
    ``CompressionConfig``, or ``None`` (never). See docs/guide/compression.md.
    """

    def __init__(
        self,
        methods: Optional[RpcMethodsBase] = None,
        *,
        authenticate: Optional[Authenticate] = None,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = 20.0,
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
        routes: Optional[Mapping[str, WebSocketRpcServer]] = None,
        speedups: Any = None,
        health_path: str = "/healthz",
        compression: Any = "deflate",
        **endpoint_kwargs: Any,
    ) -> None:
        #: Everything but the socket, shared with the FastAPI endpoint (:class:`~fastwsrpc.service.RpcService`).
        self.service = RpcService("WebSocketRpcServer", methods, suggest=_SERVER_NAMES, **endpoint_kwargs)
        self.authenticate = authenticate
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.speedups = speedups
        #: permessage-deflate as this server agrees it (``None``: declined).
        self.compression: Optional[CompressionConfig] = compression_config(compression)
        #: A plain GET here answers 200 "ok", or 503 while draining (for load balancers).
        self.health_path = health_path
        self._routes: List[_Route] = [_Route(path, srv) for path, srv in (routes or {}).items()]
        self._server: Any = None  # asyncio's Server (its type is not public before Python 3.12)
        self._tasks: Set[asyncio.Task[None]] = set()
        self._channels: Set[RpcChannel] = set()
        self._stop: Optional[asyncio.Event] = None

    # The service's public face, under the endpoint's names.
    @property
    def endpoint(self) -> RpcService:
        """What this server shares with the FastAPI endpoint (kept under the name it had)."""
        return self.service

    @property
    def methods(self) -> RpcMethodsBase:
        """The methods object each connection gets a copy of."""
        return self.service.methods

    @property
    def settings(self) -> Any:
        """The :class:`~fastwsrpc.config.RpcSettings` every connection obeys."""
        return self.service.settings

    @property
    def cluster(self) -> Any:
        """Calls, notifications and broadcasts to clients on any node (see :mod:`fastwsrpc.cluster`)."""
        return self.service.cluster

    @property
    def topics(self) -> Any:
        """The topic hub clients subscribe to (``publish`` feeds it)."""
        return self.service.topics

    @property
    def subprotocols(self) -> Tuple[str, ...]:
        """Subprotocols accepted when a client offers them (never forced)."""
        return self.service.subprotocols

    @property
    def _binary(self) -> bool:
        return self.service.binary

    @property
    def channels(self) -> Set[RpcChannel]:
        """The open connections' channels."""
        return set(self._channels)

    async def publish(self, topic: str, data: Any = None) -> Optional[Tuple[str, int]]:
        """Send ``data`` to every subscriber of ``topic`` (see :meth:`WebSocketRpcEndpoint.publish`)."""
        return await self.service.publish(topic, data)

    def route(self, path: str, server: WebSocketRpcServer) -> None:
        """Serve ``server``'s methods at ``path`` (a template such as ``"/rooms/{room}"``) on this listener."""
        self._routes.append(_Route(path, server))

    # ------------------------------------------------------------------ listening
    @property
    def sockets(self) -> Tuple[Any, ...]:
        """The listening sockets (``server.sockets[0].getsockname()[1]``: the port picked for ``port=0``)."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @asynccontextmanager
    async def listen(
        self,
        host: Optional[str] = "127.0.0.1",
        port: Optional[int] = 9000,
        path: str = "/ws",
        ssl: Optional[_ssl.SSLContext] = None,
        **create_server: Any,
    ) -> AsyncIterator[WebSocketRpcServer]:
        """Serve for the duration of the block; on exit, every connection closes (1001) and the port is freed."""
        if not any(r.template == path and r.server is self for r in self._routes):
            self._routes.insert(0, _Route(path, self))
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Ready before we accept: each cluster served here has joined (presence known),
        # so the first connection's first call reaches a client on another node.
        services = {id(route.server.service): route.server.service for route in self._routes}
        services[id(self.service)] = self.service
        joined_here = [service for service in services.values() if not service.cluster.started]
        await asyncio.gather(*(service.start() for service in services.values()))
        if create_server.get("sock") is not None:
            host = port = None
        self._server = await loop.create_server(lambda: _ServerWebSocket(self), host, port, ssl=ssl, **create_server)
        for sock in self._server.sockets:
            address = sock.getsockname()
            logger.info("listening on ws%s://%s:%s%s", "s" if ssl else "", address[0], address[1], path)
        try:
            yield self
        finally:
            await self._shutdown()
            # What this block joined, it leaves: the broker's connections close with the server.
            for service in joined_here:
                await _quiet(service.cluster.close())

    async def serve(
        self,
        host: Optional[str] = "127.0.0.1",
        port: Optional[int] = 9000,
        path: str = "/ws",
        ssl: Optional[_ssl.SSLContext] = None,
        **create_server: Any,
    ) -> None:
        """Serve until cancelled or :meth:`close`."""
        async with self.listen(host, port, path, ssl, **create_server):
            assert self._stop is not None
            await self._stop.wait()

    async def drain(self, timeout: float = 30.0) -> None:
        """Drain for a deploy: refuse new connections (HTTP 503; the health route says 503 too),
        let calls in flight finish, then close every connection with 1012, spread over ``timeout``.

        The listener stays open (a load balancer reads the health route) until :meth:`close`.
        """
        others = {route.server for route in self._routes} - {self}
        for server in (self, *others):
            server.service.draining = True
        await asyncio.gather(self.service.drain(timeout), *(server.service.drain(timeout) for server in others))

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun (new connections are refused)."""
        return self.service.draining

    def close(self) -> None:
        """Stop serving: ``serve`` returns once every connection is closed."""
        if self._stop is not None:
            self._stop.set()

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        channels = list(self._channels)
        if channels:
            await asyncio.gather(
                *(_quiet(ch.close(CLOSE_GOING_AWAY, "server shutting down")) for ch in channels), return_exceptions=True
            )
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.close_timeout)
            for task in late:
                task.cancel()
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), self.close_timeout)
            except asyncio.TimeoutError:  # pragma: no cover - only with a connection stuck in the kernel
                pass

    # ------------------------------------------------------------------ one connection
    def _start_connection(self, conn: _ServerWebSocket, request: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(conn, request))
        conn.opening_task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _match(self, path: str) -> Optional[Tuple[WebSocketRpcServer, Dict[str, str]]]:
        for candidate in self._routes:
            params = candidate.match(path)
            if params is not None:
                return candidate.server, params
        return None

    async def _connection(self, conn: _ServerWebSocket, request: Request) -> None:
        """The upgrade, then the channel, in one task whose frames last as long as the connection:
        kept few (each costs an idle connection its locals), the upgrade's is gone once it returns."""
        try:
            opened = await self._upgrade(conn, request)
            if opened is not None:
                del request
                await opened[0]._serve_channel(conn, self, *opened[1:])
        except Exception:  # a bug of ours or a callback's: this connection ends, the server goes on
            logger.exception("connection from %s failed", conn.peer or "?")
            conn.abort()

    async def _upgrade(
        self, conn: _ServerWebSocket, request: Request
    ) -> Optional[Tuple[WebSocketRpcServer, HandshakeRequest, Any, Any, Optional[Session], bool]]:
        """Decide the upgrade and answer it: what serving the connection needs, or None (refused, or gone)."""
        path, _, query_string = request.path.partition("?")
        found = self._match(path)
        target = found[0] if found is not None else self

        def choose(_: ServerProtocol, offered: Sequence[Subprotocol]) -> Optional[Subprotocol]:
            # Accepted when offered, never forced (RFC 6455: no answer to a client that offered none).
            for name in target.subprotocols:
                if name in offered:
                    return Subprotocol(name)
            return None

        handshake = ServerProtocol(
            select_subprotocol=choose, max_size=None, extensions=server_extensions(target.compression)
        )
        if path == self.health_path and "upgrade" not in request.headers.get("Connection", "").lower():
            health = (503, "draining\n") if self.service.draining else (200, "ok\n")
            conn.refused(handshake.reject(*health), handshake)
            return None
        if target.service.draining:
            conn.refused(handshake.reject(503, "draining: this server is restarting, try another\n"), handshake)
            return None
        if found is None:
            conn.refused(handshake.reject(404, f"no WebSocket endpoint at {path}\n"), handshake)
            return None
        response = handshake.accept(request)
        if response.status_code != 101:
            conn.refused(response, handshake)
            return None
        refusal = origin_refusal(
            ", ".join(request.headers.get_all("Origin")) or None,
            ", ".join(request.headers.get_all("Host")) or None,
            target.service.allowed_origins,
        )
        if refusal is not None:
            logger.info("refused %s at %s with HTTP 403: %s", conn.peer or "?", path, refusal)
            conn.refused(handshake.reject(403, refusal + "\n"), handshake)
            return None
        params = found[1]
        info = HandshakeRequest(
            path=path,
            path_params=params,
            headers=FrozenHeaders(request.headers),
            query=dict(parse_qsl(query_string, keep_blank_values=True)),
            query_string=query_string,
            peer=conn.peer,
        )
        conn.request = info
        name: Any = params.get("client_id")
        if target.authenticate is not None:
            try:
                who = await target.authenticate(info)
            except Exception as exc:
                status = getattr(exc, "status", None)
                status = status if isinstance(status, int) and 400 <= status < 500 else 403
                logger.info("refused %s at %s with HTTP %s: %s", conn.peer or "?", path, status, exc)
                conn.refused(handshake.reject(status, "authentication failed\n"), handshake)
                return None
            if who is not None:
                name = who
        service = target.service
        agreed = service.features & parse_features(request.headers.get(FEATURES_HEADER))
        agreed = _AGREED.setdefault(agreed, agreed)  # one frozenset per combination, not one per connection
        response.headers[FEATURES_HEADER] = format_features(agreed, service.settings.max_pending_requests)
        asked = info.query.get(SESSION_QUERY)
        session, session_header = await service.open_session(request.headers.get(SESSION_HEADER), asked)
        if session_header is not None:
            response.headers[SESSION_HEADER] = session_header
        if conn.transport is None or conn.transport.is_closing():
            return None  # the client left while we decided
        conn.accepted(response, handshake, target.compression)
        return target, info, name, agreed, session, asked is not None

    def _serve_channel(
        self,
        conn: _ServerWebSocket,
        listener: WebSocketRpcServer,
        info: HandshakeRequest,
        name: Any,
        agreed: Any,
        session: Optional[Session] = None,
        session_notice: bool = False,
    ) -> Awaitable[None]:
        """What the FastAPI endpoint does after ``accept``, on the native transport."""
        context: Dict[str, Any] = {**info.path_params, "websocket": conn, "request": info}
        if name is not None:
            context["client_id"] = name
        return self.service.serve(  # the service's coroutine itself: no frame of this method stays
            conn,
            context=context,
            subprotocol=conn.subprotocol,
            agreed=agreed,
            name=name,
            identify_with=info,  # the HandshakeRequest here (a WebSocket on FastAPI)
            speedups=self.speedups,
            channels=listener._channels,
            session=session,
            session_notice=session_notice,
            tasks=listener._tasks,  # the service returns once the connection is idle (see RpcService.serve)
        )


def drain_on_sigterm(server: WebSocketRpcServer, timeout: float) -> None:
    """On SIGTERM: drain ``server`` over ``timeout`` seconds, then close it (POSIX; elsewhere nothing)."""
    loop = asyncio.get_running_loop()

    async def drain_then_close() -> None:
        logger.warning("SIGTERM: draining for up to %.3g s, then stopping", timeout)
        try:
            await server.drain(timeout)
        finally:
            server.close()

    def on_sigterm() -> None:
        if not server.draining:
            task = loop.create_task(drain_then_close())
            server._tasks.add(task)
            task.add_done_callback(server._tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - Windows, or not the main thread
        pass


#: The server's own keywords, for "did you mean" on a misspelt one.
_SERVER_NAMES = (
    "authenticate",
    "ping_interval",
    "ping_timeout",
    "open_timeout",
    "close_timeout",
    "routes",
    "speedups",
    "health_path",
)


async def _quiet(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # the connection is already gone
        pass


def run(
    methods: Optional[RpcMethodsBase] = None,
    host: str = "127.0.0.1",
    port: int = 9000,
    *,
    path: str = "/ws",
    ssl: Optional[_ssl.SSLContext] = None,
    drain_timeout: float = 30.0,
    **server_kwargs: Any,
) -> None:
    """Serve ``methods`` until interrupted (Ctrl-C), on uvloop when it is installed.

    SIGTERM drains (see :meth:`WebSocketRpcServer.drain`, over ``drain_timeout``
    seconds), then stops: a rolling restart drops no call.

    ``server_kwargs`` are :class:`WebSocketRpcServer`'s (hence the endpoint's).
    """

    async def main() -> None:
        server = WebSocketRpcServer(methods, **server_kwargs)
        async with server.listen(host, port, path, ssl):
            for sock in server.sockets:
                address = sock.getsockname()
                # A program's own entry point says where it is, whatever logging says.
                print(
                    f"fastwsrpc: serving on ws{'s' if ssl else ''}://{address[0]}:{address[1]}{path}", file=sys.stderr
                )
            drain_on_sigterm(server, drain_timeout)
            assert server._stop is not None
            await server._stop.wait()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/POSIX
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main())
    except KeyboardInterrupt:
        pass
