"""WebSocketRpcEndpoint: the FastAPI/Starlette adapter of the server side.

One channel per connection. FastAPI ``dependencies`` on the route run before the
connection is accepted, so they can refuse it (raise
``WebSocketException(code=status.WS_1008_POLICY_VIOLATION)``; the client then
sees the handshake fail with HTTP 403).

The ``jsonrpc2.0`` subprotocol is accepted when the client offers it; a client
that offers none gets none (RFC 6455 forbids answering one that was not
offered), which is what plain JSON-RPC clients of other languages expect.

Server-side liveness: Starlette cannot send WebSocket pings itself; uvicorn
does, with its ``ws_ping_interval`` / ``ws_ping_timeout`` settings, and clients
may also call the RPC ``ping`` method.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import _accel
from .channel import OnConnectCallback, OnDisconnectCallback, OnErrorCallback
from .config import RpcBackpressureConfig, RpcConnectionConfig, RpcDebugConfig, RpcSettings
from .interceptors import FEATURES_HEADER, RpcInterceptor, format_features, parse_features
from .logger import get_logger
from .methods import RpcMethodsBase
from .origin import origin_refusal
from .service import RpcService
from .sessions import DEFAULT_SESSION_TTL, SESSION_HEADER, SESSION_QUERY
from .topics import DEFAULT_TOPIC_QUEUE
from .transport import CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, TransportClosed
from .uvicorn_direct import FastReader, harden_keepalive, take_over, write_direct

logger = get_logger("endpoint")

_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


class WebSocketFrameType(str, Enum):
    """Whether answers go out as text frames (the JSON-RPC norm) or binary ones."""

    Text = "text"
    Binary = "binary"


class StarletteTransport:
    """A Starlette ``WebSocket`` as a :class:`~fastwsrpc.transport.Transport`."""

    __slots__ = ("_binary", "_build", "_conn", "_direct", "_opcode", "_server", "_ws_receive", "_ws_send", "websocket")

    def __init__(self, websocket: WebSocket, binary: bool = False) -> None:
        self.websocket = websocket
        # Once accepted, the ASGI callables themselves: Starlette's per-message
        # state checks cost about 2 us a call on the server (64 calls in flight:
        # 16 -> 14 us of server CPU per call). Its state matters only at close,
        # and close goes through Starlette.
        self._ws_send = getattr(websocket, "_send", None) or websocket.send
        self._ws_receive = getattr(websocket, "_receive", None) or websocket.receive
        self._binary = binary
        # ASGI gives no way to drop a connection or to see a frame half
        # received; uvicorn's protocol object (the owner of the ASGI receive
        # callable) can do both. Best effort: other servers fall back to close
        # (abort) and to their own keepalive (slow senders).
        self._server: Any = getattr(getattr(websocket, "_receive", None), "__self__", None)
        # Under uvicorn's sans-I/O protocol, our codec reads and writes the frames
        # of an open, uncompressed connection (see uvicorn_direct.py).
        harden_keepalive(self._server)
        self._conn: Any = take_over(self._server)
        self._direct: Any = self._server if self._conn is not None else None
        self._build = _accel.impl.build_frame
        self._opcode = 2 if binary else 1

    async def send(self, data: bytes) -> None:
        """Send one frame; waits while uvicorn's write buffer is full (the peer is not reading)."""
        server = self._direct
        if server is not None and write_direct(server, self._conn, self._opcode, data, self._build):
            return
        message = (
            {"type": "websocket.send", "bytes": data}
            if self._binary
            else {"type": "websocket.send", "text": data.decode()}
        )
        try:
            await self._ws_send(message)
        except _SEND_ERRORS as exc:
            raise TransportClosed(getattr(exc, "code", 1006), str(exc)) from exc

    async def receive(self) -> Union[str, bytes]:
        """The next whole message; TransportClosed when the connection ends."""
        try:
            message = await self._ws_receive()
        except _SEND_ERRORS as exc:
            raise TransportClosed(1006, str(exc)) from exc
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")
        raise TransportClosed(message.get("code", 1000), message.get("reason") or "")

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close with a closing handshake; quiet if the socket is already gone."""
        try:
            await self.websocket.close(code, reason)
        except _SEND_ERRORS:
            pass

    def abort(self) -> None:
        """Drop the TCP connection at once (uvicorn only; elsewhere the close must do)."""
        transport = getattr(self._server, "transport", None)
        if transport is not None and hasattr(transport, "abort"):
            transport.abort()

    @property
    def peer(self) -> str:
        """``host:port`` of the client, for log lines."""
        client = self.websocket.client
        return f"{client.host}:{client.port}" if client else ""

    def receiving(self) -> bool:
        """Whether uvicorn holds part of a frame or message not yet complete (slowloris watch)."""
        server = self._server
        conn = getattr(server, "conn", None)  # uvicorn's websockets sans-I/O protocol
        if isinstance(conn, FastReader):
            return conn.receiving()
        if conn is not None:
            buffer = getattr(getattr(conn, "reader", None), "buffer", None)
            return bool(buffer) or bool(getattr(server, "frames", None))
        # uvicorn's legacy websockets protocol (the default of the uvicorn releases
        # that run on Python 3.9): a frame not yet whole waits in its StreamReader.
        reader = getattr(server, "reader", None)
        return isinstance(reader, asyncio.StreamReader) and bool(getattr(reader, "_buffer", None))


async def _deny(websocket: WebSocket, status: int, text: str) -> None:
    """Refuse a handshake with an HTTP status and a reason (a bare 403 where the server cannot say more)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(PlainTextResponse(text + "\n", status_code=status))
    else:  # a server without the denial extension answers a close before accept with a bare 403
        await websocket.close(CLOSE_POLICY_VIOLATION)


class ConnectionManager:
    """Keeps the list of open connections (as ``fastapi-ws-rpc`` does)."""

    def __init__(self) -> None:
        self.active_connections: List[WebSocket] = []

    async def connect(
        self,
        websocket: WebSocket,
        subprotocol: Optional[str] = None,
        headers: Optional[List[Tuple[bytes, bytes]]] = None,
    ) -> None:
        """Accept the WebSocket (with the chosen subprotocol and extra response headers) and remember it."""
        await websocket.accept(subprotocol=subprotocol, headers=headers)
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        """Forget a connection that ended."""
        if websocket in self.active_connections:
            self.active_connections.remove(websocket)


class WebSocketRpcEndpoint:
    """Serves an ``RpcMethodsBase`` over WebSocket on a FastAPI app or router.

    The keyword arguments are those of ``fastapi-ws-rpc`` 1.x; the limits default
    to the project page's (10 MB messages, 1000 calls in flight per connection).

    :param methods: What clients may call: an *instance* of an ``RpcMethodsBase``
        subclass (its public ``async def`` and ``def`` methods). Each connection gets
        a shallow copy bound to its channel (``self.channel``). The class itself, or an
        object that is not an ``RpcMethodsBase``, is refused here with a ``TypeError``.
        ``None``: an ``RpcMethodsBase()``, which answers only ``ping``.
    :param manager: Keeps the list of open WebSockets (``manager.active_connections``)
        and accepts each one (``connect(websocket, subprotocol, headers)``).
        ``None``: a new ``ConnectionManager``. A manager of your own is called as
        fastapi-ws-rpc called it; the handshake headers that advertise this server's
        limit and sessions are sent only through the default one.
    :param on_disconnect: Async callbacks ``cb(channel)``, each run once when a
        connection ends, however it ends. One that raises is logged and skipped.
    :param on_connect: Async callbacks ``cb(channel)``, run for each new connection
        once its read loop is going, so they may call the client
        (``await channel.other.whoami()``). Each runs in its own task; one that raises
        is logged and skipped.
    :param frame_type: ``WebSocketFrameType.Text`` (default; the JSON-RPC norm) or
        ``WebSocketFrameType.Binary`` (or ``"binary"``): the frame type of what the
        server sends. Incoming frames may be either.
    :param serializing_socket_cls: Accepted for fastapi-ws-rpc compatibility and
        ignored, with a warning: fastwsrpc always speaks JSON-RPC 2.0 in JSON.
    :param rpc_channel_get_remote_id: Accepted for fastapi-ws-rpc compatibility and
        ignored, with a warning: name connections with ``{client_id}`` in the route
        or with ``identify``.
    :param max_message_size: Largest incoming frame, in bytes (default 10 MB). A
        larger one is refused before it is parsed and the connection is closed with
        1009. uvicorn refuses frames over its own ``ws_max_size`` (16 MiB by default)
        first: raise that too to go above it.
    :param max_pending_requests: Incoming calls, notifications and batch items
        running at once on one connection (default 1000); more wait in a queue of
        ``max_queued_requests``. Advertised to our clients in the handshake, which
        then keep their calls under it. Also the most of the server's own calls to
        that client waiting for answers; more wait locally.
    :param max_connection_duration: Seconds after which a connection is closed
        (code 1000), whatever it is doing. ``None`` (default): no limit.
    :param connection_config: An ``RpcConnectionConfig``: the server uses its
        timeouts (``default_response_timeout``, ``max_connection_duration``,
        ``idle_timeout``, ``message_receive_timeout``, ``send_timeout``), its
        ``debug`` and its ``websocket.subprotocols``; the reconnect fields are the
        client's and are not used here. Keywords given here win over it.
    :param on_error: Async callbacks ``cb(channel, exc)``, run when one of the
        methods raises an unexpected exception (the caller gets -32603). One that
        raises is logged and skipped.
    :param default_response_timeout: Seconds a call from the server to a client
        waits for its answer when the call gives no ``timeout`` (then
        ``RpcTimeoutError``). ``None`` (default): it waits as long as the connection
        lives.
    :param debug_mode: ``True``: an error answer for a method that crashed carries
        the exception's text (it may hold secrets: development only). ``None``
        (default): from ``connection_config.debug``, else off, and the answer says
        only ``"Internal error"``.
    :param subprotocols: WebSocket subprotocols accepted when a client offers them,
        in order of preference; none is ever forced on a client that offered none.
        ``None`` (default): ``connection_config.websocket.subprotocols`` if given,
        else ``("jsonrpc2.0",)``.
    :param discovery: ``True`` (default): ``rpc.discover`` answers an OpenRPC
        document of the exposed methods (names, docstrings, JSON Schemas of params
        and results). ``False``: it is an unknown method (-32601).
    :param settings: An ``RpcSettings`` to start from; the config objects and then
        the keywords given here override its fields. ``None``: the defaults.
    :param backpressure_config: An ``RpcBackpressureConfig`` holding the limits of
        one connection (the ``max_*`` keywords in one object). Keywords given here
        win over it.
    :param max_send_queue_size: Answers handed to the socket and not yet taken by
        it, per connection (default 1000). At the limit the server stops reading
        that connection until its client reads.
    :param max_batch_size: Items in one incoming batch (default 1000). A longer
        batch is refused whole with one -32600 error.
    :param max_depth: Nesting depth of an incoming frame's JSON (default 128),
        checked before parsing. A deeper frame is answered -32700; the connection
        goes on.
    :param max_queued_requests: Incoming messages that may wait past
        ``max_pending_requests`` (default 1000). Past it a call is refused at once
        with -32001 (``data`` names the limit and gives ``retry_after``); a
        notification, which has no answer to refuse with, is queued and reading
        stops until the queue drains.
    :param max_connection_bytes: Bytes one connection may hold for its client:
        frames of work running or queued, answers not yet taken by the socket
        (default 64 MiB). Past it calls are refused with -32001 and answers stop the
        reading. One message up to ``max_message_size`` is always admitted to an
        empty budget.
    :param idle_timeout: Seconds without a message either way and with no call in
        flight either way, after which a connection is closed (code 1001, "idle
        timeout"). ``None`` (default): never.
    :param message_receive_timeout: Seconds a client may take to finish a message
        it has begun (default 60); a slower one is closed with 1008 (slowloris).
        ``None``: no limit.
    :param send_timeout: Seconds a client may go without reading anything the
        server sends (default 60); then its socket is dropped, with a WARNING naming
        its address. ``None``: no limit.
    :param raise_on_error: ``True`` (default): an error answer to a call the server
        makes to a client raises (a ``RemoteValueError`` subclass). ``False``: the
        call returns the ``Response`` with ``.error`` set, as fastapi-ws-rpc 1.2 did.
    :param broker: The cluster broker shared by the server processes (a
        ``RedisBroker``, ``NatsBroker`` or ``LocalBroker``; ``broker_from_url(url)``
        builds one), so that ``endpoint.cluster`` reaches clients connected to any
        of them and ``publish`` reaches every subscriber. ``None`` (default): this
        process alone. Ignored when ``cluster`` is given.
    :param identify: How a connection is named in the cluster when its route has
        no ``{client_id}``: called with the ``WebSocket`` (on the native server, the
        ``HandshakeRequest``), it returns the id; it may be async. ``None``
        (default), or a ``None`` result: the channel's own id.
    :param on_duplicate: What a second connection under a client id already
        connected does: ``"replace"`` (default) closes the older one with code 4000
        ("replaced by a newer connection"); ``"reject"`` closes the newer one with
        1008. Ignored when ``cluster`` is given.
    :param cluster: A ``fastwsrpc.cluster.Cluster`` of your own, for its other
        settings (``presence_ttl``, ``heartbeat_interval``, ``max_routed_calls``).
        ``None`` (default): one is made from ``broker`` and ``on_duplicate``.
    :param topic_queue_size: Events queued per subscription for a subscriber that
        reads slower than topics are published (default 256); past it, ``on_slow``
        applies.
    :param on_slow: What happens to a subscriber whose queue is full:
        ``"disconnect"`` (default; its connection is closed with 1008),
        ``"drop_oldest"`` or ``"drop_new"``. A subscriber may ask for its own.
        Every event says how many its subscription has lost (``dropped``).
    :param topic_history: Publications kept per topic (default 0: none), so that a
        subscriber coming back with the position it last saw (``since``) gets what
        it missed, in order, with no duplicates. Kept by the broker (in memory,
        Redis Streams, NATS JetStream).
    :param topic_history_ttl: Seconds each kept publication lives (``None``,
        default: until ``topic_history`` newer ones push it out).
    :param interceptors: Interceptors (``RpcInterceptor``) run around every call both ways on
        every connection, the first outermost (for example
        ``fastwsrpc.otel.OpenTelemetryInterceptor()``). Default: none.
    :param allowed_origins: Which web pages may connect. A handshake without an
        ``Origin`` header (any program) is always accepted. ``None`` (default): a
        browser page only from the server's own origin (the ``Host`` it was reached
        at, either scheme). A list (``["https://app.example.com"]``): those origins
        as well. ``"*"``: every origin (the check is off). A refused page gets HTTP
        403 with the reason, and the server logs one INFO line.
    :param session_ttl: Seconds the server keeps the session of a client that asked
        for one after the client leaves (default 120), so that its idempotent calls
        run once across reconnects (see the Sessions guide). ``None``: no sessions.
    """

    def __init__(
        self,
        methods: Optional[RpcMethodsBase] = None,
        manager: Optional[ConnectionManager] = None,
        on_disconnect: Optional[List[OnDisconnectCallback]] = None,
        on_connect: Optional[List[OnConnectCallback]] = None,
        frame_type: WebSocketFrameType = WebSocketFrameType.Text,
        serializing_socket_cls: Any = None,
        rpc_channel_get_remote_id: bool = False,
        max_message_size: Optional[int] = None,
        max_pending_requests: Optional[int] = None,
        max_connection_duration: Optional[float] = None,
        connection_config: Optional[RpcConnectionConfig] = None,
        on_error: Optional[List[OnErrorCallback]] = None,
        default_response_timeout: Optional[float] = None,
        debug_mode: Optional[bool] = None,
        subprotocols: Optional[Sequence[str]] = None,
        discovery: bool = True,
        *,
        settings: Optional[RpcSettings] = None,
        backpressure_config: Optional[RpcBackpressureConfig] = None,
        max_send_queue_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        max_depth: Optional[int] = None,
        max_queued_requests: Optional[int] = None,
        max_connection_bytes: Optional[int] = None,
        idle_timeout: Optional[float] = None,
        message_receive_timeout: Optional[float] = None,
        send_timeout: Optional[float] = None,
        raise_on_error: bool = True,
        broker: Any = None,
        identify: Optional[Callable[[WebSocket], Any]] = None,
        on_duplicate: str = "replace",
        cluster: Any = None,
        topic_queue_size: int = DEFAULT_TOPIC_QUEUE,
        on_slow: str = "disconnect",
        topic_history: int = 0,
        topic_history_ttl: Optional[float] = None,
        interceptors: Sequence[RpcInterceptor] = (),
        allowed_origins: Union[str, Sequence[str], None] = None,
        session_ttl: Optional[float] = DEFAULT_SESSION_TTL,
    ) -> None:
        self.manager = manager if manager is not None else ConnectionManager()
        #: Everything but the socket, shared with the native server (:class:`~fastwsrpc.service.RpcService`).
        self.service = RpcService(
            "WebSocketRpcEndpoint",
            methods,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            on_error=on_error,
            frame_type=frame_type,
            serializing_socket_cls=serializing_socket_cls,
            rpc_channel_get_remote_id=rpc_channel_get_remote_id,
            connection_config=connection_config,
            backpressure_config=backpressure_config,
            settings=settings,
            debug_mode=debug_mode,
            discovery=discovery,
            raise_on_error=raise_on_error,
            subprotocols=subprotocols,
            broker=broker,
            identify=identify,
            on_duplicate=on_duplicate,
            cluster=cluster,
            topic_queue_size=topic_queue_size,
            on_slow=on_slow,
            topic_history=topic_history,
            topic_history_ttl=topic_history_ttl,
            interceptors=interceptors,
            allowed_origins=allowed_origins,
            session_ttl=session_ttl,
            max_message_size=max_message_size,
            max_pending_requests=max_pending_requests,
            max_connection_duration=max_connection_duration,
            default_response_timeout=default_response_timeout,
            max_send_queue_size=max_send_queue_size,
            max_batch_size=max_batch_size,
            max_depth=max_depth,
            max_queued_requests=max_queued_requests,
            max_connection_bytes=max_connection_bytes,
            idle_timeout=idle_timeout,
            message_receive_timeout=message_receive_timeout,
            send_timeout=send_timeout,
        )
        service = self.service
        #: The service's parts, under the names the endpoint always had.
        self.methods, self.settings, self.cluster = service.methods, service.settings, service.cluster
        self.topics, self.interceptors, self.subprotocols = service.topics, service.interceptors, service.subprotocols
        self.allowed_origins = service.allowed_origins

    @property
    def identify(self) -> Optional[Callable[[WebSocket], Any]]:
        """How a connection is named in the cluster when the route has no ``{client_id}`` (may be async)."""
        return self.service.identify

    @identify.setter
    def identify(self, value: Optional[Callable[[WebSocket], Any]]) -> None:
        self.service.identify = value

    # Read-only views of the settings, under the names fastapi-ws-rpc users know.
    @property
    def max_message_size(self) -> int:
        """Largest frame accepted, in bytes (larger closes with 1009)."""
        return self.settings.max_message_size

    @property
    def max_pending_requests(self) -> int:
        """Incoming work in flight per connection before reading stops."""
        return self.settings.max_pending_requests

    @property
    def max_connection_duration(self) -> Optional[float]:
        """Age at which a connection is closed (``None``: never)."""
        return self.settings.max_connection_duration

    @property
    def default_response_timeout(self) -> Optional[float]:
        """Timeout of server-to-client calls that give none (``None``: wait)."""
        return self.settings.default_response_timeout

    @property
    def debug_config(self) -> RpcDebugConfig:
        """Whether error answers reveal exception details."""
        return RpcDebugConfig(debug_mode=self.settings.debug_mode)

    @property
    def discovery(self) -> bool:
        """Whether ``rpc.discover`` answers an OpenRPC document of the exposed methods."""
        return self.settings.discovery

    def _choose_subprotocol(self, websocket: WebSocket) -> Optional[str]:
        offered = websocket.scope.get("subprotocols") or ()
        for name in self.subprotocols:
            if name in offered:
                return name
        return None

    async def main_loop(self, websocket: WebSocket, client_id: Optional[str] = None, **kwargs: Any) -> None:
        """Accept the connection and serve it until it ends.

        Use it from your own route when you need path parameters:
        ``@app.websocket("/ws/{client_id}")`` then ``await endpoint.main_loop(websocket, client_id)``.
        Extra keyword arguments land in ``channel.context``.
        """
        refusal = origin_refusal(
            ", ".join(websocket.headers.getlist("origin")) or None,
            ", ".join(websocket.headers.getlist("host")) or None,
            self.allowed_origins,
        )
        if refusal is not None:
            peer = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "?"
            logger.info("refused %s at %s with HTTP 403: %s", peer, websocket.url.path, refusal)
            await _deny(websocket, 403, refusal)
            return
        if self.service.draining:
            await _deny(websocket, 503, "draining: this server is restarting, try another")
            return
        subprotocol = self._choose_subprotocol(websocket)
        # Features both sides understand (say "meta" for trace context) are agreed in the handshake.
        agreed = self.service.features & parse_features(websocket.headers.get(FEATURES_HEADER))
        # The limit our clients keep their calls under (they queue the rest locally).
        asked = websocket.query_params.get(SESSION_QUERY)
        session, session_header = await self.service.open_session(websocket.headers.get(SESSION_HEADER), asked)
        if type(self.manager).connect is ConnectionManager.connect:
            advertised = format_features(agreed, self.settings.max_pending_requests)
            headers = [(FEATURES_HEADER.encode(), advertised.encode())]
            if session_header is not None:
                headers.append((SESSION_HEADER.encode(), session_header.encode()))
            await self.manager.connect(websocket, subprotocol, headers)
        elif agreed:  # a manager of the user's own: called as it always was
            await self.manager.connect(
                websocket, subprotocol, [(FEATURES_HEADER.encode(), format_features(agreed).encode())]
            )
        else:
            await self.manager.connect(websocket, subprotocol)
        if client_id is not None:
            kwargs.setdefault("client_id", client_id)
        kwargs.setdefault("websocket", websocket)
        try:
            await self.service.serve(
                StarletteTransport(websocket, binary=self.service.binary),
                context=kwargs,
                subprotocol=subprotocol,
                agreed=agreed,
                name=client_id,
                identify_with=websocket,
                session=session,
                session_notice=asked is not None,
            )
        finally:
            self.manager.disconnect(websocket)

    async def start(self) -> None:
        """Join the cluster before serving: call it in the FastAPI lifespan.

        A node that joins at its first connection cannot yet locate clients held
        by other nodes (on NATS it learns them from its peers): a call routed in
        that first moment would fail. The native server does this in ``listen``.
        """
        await self.service.start()

    async def drain(self, timeout: float = 30.0) -> None:
        """Drain for a deploy: refuse new connections (HTTP 503), let calls in flight finish, then
        close every connection with 1012, spread over ``timeout`` (see :meth:`RpcService.drain`).

        Point your health route at :attr:`draining` so the load balancer stops sending clients here.
        """
        await self.service.drain(timeout)

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun: answer 503 on your health route while it is true."""
        return self.service.draining

    async def publish(self, topic: str, data: Any = None) -> Optional[Tuple[str, int]]:
        """Send ``data`` to every subscriber of ``topic``: on every node when a broker is set, each once.

        A subscriber that cannot keep up meets the endpoint's ``on_slow``
        policy (or the one it asked for): it is never buffered without bound.
        """
        return await self.service.publish(topic, data)

    def register_route(self, router: Any, path: str = "/ws", dependencies: Optional[Sequence[Any]] = None) -> None:
        """Add this endpoint as a WebSocket route of ``router`` (a FastAPI app or APIRouter)."""

        async def websocket_endpoint(websocket: WebSocket) -> None:
            # A route such as "/ws/{client_id}" names the connection.
            await self.main_loop(websocket, websocket.path_params.get("client_id"))

        router.add_api_websocket_route(path, websocket_endpoint, dependencies=dependencies)
