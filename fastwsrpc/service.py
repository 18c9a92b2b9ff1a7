"""What both servers share: the transport-neutral service, and the path that serves a connection.

:class:`RpcService` holds everything about serving that is not the socket:
the methods, the settings every channel obeys, the callbacks, the cluster, the
topics, the interceptors and their features, discovery, the Origin rule and
the subprotocols. The FastAPI endpoint and the native server each wrap one, so
a setting means the same on both and the native server loads no Starlette.

:meth:`RpcService.serve` is the one path from an accepted connection to its
end. Everything that exists from the moment the channel is built (its
watchdog, its timers, its cluster registration, the server's list of channels)
is released in one ``finally``, whatever fails: ``identify``, ``cluster.attach``,
``on_connect``, the read loop, or a cancellation of the serving task. This
module is an adapter, with the endpoint, the server and the client: it builds
channels.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, Union

from .config import JSONRPC_SUBPROTOCOL, RpcBackpressureConfig, RpcConnectionConfig, RpcDebugConfig, RpcSettings
from .errors import RpcDuplicateClientError
from .interceptors import RpcInterceptor, features_of
from .logger import get_logger
from .methods import RpcMethodsBase
from .origin import normalize_allowed_origins
from .sessions import DEFAULT_SESSION_TTL, SESSION_NOTICE, Session, SessionStore
from .topics import DEFAULT_TOPIC_QUEUE, TopicHub
from .transport import CLOSE_INTERNAL_ERROR, CLOSE_POLICY_VIOLATION, CLOSE_SERVICE_RESTART, Transport

if TYPE_CHECKING:
    from .channel import RpcChannel
    from .cluster import Cluster

logger = get_logger("endpoint")

#: How often a drain looks again at a connection's running calls (seconds).
_DRAIN_POLL = 0.02


class RpcService:
    """Serving, without the socket: one per endpoint or native server (see the module docstring).

    ``owner`` names the class the user built, in errors. The keywords are the
    endpoint's (see :class:`~fastwsrpc.endpoint.WebSocketRpcEndpoint`); the
    limits among them (``max_pending_requests``, ``idle_timeout``, ...) go to
    :meth:`RpcSettings.resolve`, which refuses an unknown name with a
    ``TypeError`` naming ``owner``.
    """

    def __init__(
        self,
        owner: str,
        methods: Optional[RpcMethodsBase] = None,
        *,
        on_connect: Optional[List[Any]] = None,
        on_disconnect: Optional[List[Any]] = None,
        on_error: Optional[List[Any]] = None,
        frame_type: str = "text",
        serializing_socket_cls: Any = None,
        rpc_channel_get_remote_id: bool = False,
        connection_config: Optional[RpcConnectionConfig] = None,
        backpressure_config: Optional[RpcBackpressureConfig] = None,
        settings: Optional[RpcSettings] = None,
        debug_mode: Optional[bool] = None,
        discovery: bool = True,
        raise_on_error: bool = True,
        subprotocols: Optional[Sequence[str]] = None,
        broker: Any = None,
        identify: Optional[Callable[[Any], Any]] = None,
        on_duplicate: str = "replace",
        cluster: Any = None,
        topic_queue_size: int = DEFAULT_TOPIC_QUEUE,
        on_slow: str = "disconnect",
        topic_history: int = 0,
        topic_history_ttl: Optional[float] = None,
        interceptors: Sequence[RpcInterceptor] = (),
        allowed_origins: Union[str, Sequence[str], None] = None,
        session_ttl: Optional[float] = DEFAULT_SESSION_TTL,
        suggest: Sequence[str] = (),
        **limits: Any,
    ) -> None:
        if isinstance(methods, type):
            raise TypeError(
                f"{owner}() takes an instance of your methods class: {owner}({methods.__name__}()), not the class"
            )
        if methods is not None and not isinstance(methods, RpcMethodsBase):
            raise TypeError(f"{owner}(): methods must be an RpcMethodsBase instance, got {type(methods).__name__}")
        #: Origins whose pages may connect besides the server's own (see :mod:`fastwsrpc.origin`).
        self.allowed_origins = normalize_allowed_origins(allowed_origins)
        self.methods = methods if methods is not None else RpcMethodsBase()
        self.on_connect: List[Any] = list(on_connect or ())
        self.on_disconnect: List[Any] = list(on_disconnect or ())
        self.on_error: List[Any] = list(on_error or ())
        #: Answers go out as binary frames (``frame_type="binary"``), not text.
        self.binary = str(getattr(frame_type, "value", frame_type)) == "binary"
        if serializing_socket_cls is not None:
            logger.warning("serializing_socket_cls is ignored: fastwsrpc always speaks JSON-RPC 2.0 JSON")
        if rpc_channel_get_remote_id:
            logger.warning("rpc_channel_get_remote_id is ignored: name connections with identify= or {client_id}")
        #: Everything each connection's channel obeys, resolved once here.
        self.settings = RpcSettings.resolve(
            settings,
            connection=connection_config,
            backpressure=backpressure_config,
            debug=None if debug_mode is None else RpcDebugConfig(debug_mode=debug_mode),
            owner=owner,
            suggest=[*_SERVICE_NAMES, *suggest],
            discovery=None if discovery else False,
            raise_on_error=None if raise_on_error else False,
            **limits,
        )
        from .cluster import Cluster  # the cluster layer imports the channel: import it late

        #: Calls, notifications and broadcasts to clients on any node (``fastwsrpc.cluster``).
        #: With no ``broker`` it is in-process: the same API in a single process.
        self.cluster: Cluster = cluster if cluster is not None else Cluster(broker, on_duplicate=on_duplicate)
        #: Wrap every call both ways, the first outermost (see :mod:`fastwsrpc.interceptors`).
        self.interceptors = tuple(interceptors)
        #: Features our interceptors need; agreed with each client in the handshake.
        self.features: FrozenSet[str] = features_of(self.interceptors)
        #: Topics clients subscribe to (``client.subscribe(...)``); ``publish`` feeds them.
        self.topics = TopicHub(
            queue_size=topic_queue_size, on_slow=on_slow, history=topic_history, history_ttl=topic_history_ttl
        )
        self.topics.attach(self.cluster)
        #: How a connection is named in the cluster when the route has no ``{client_id}``
        #: (may be async); ``None``: the channel's id.
        self.identify = identify
        if subprotocols is None:
            offered = connection_config.websocket.subprotocols if connection_config is not None else None
            subprotocols = offered or (JSONRPC_SUBPROTOCOL,)
        self.subprotocols = tuple(subprotocols)
        #: Sessions of clients that asked for one, kept ``session_ttl`` seconds after they leave.
        self.sessions = SessionStore(session_ttl)
        if session_ttl is not None:
            # With a broker that keeps session records, a client may resume on any node.
            self.sessions.shared = self.cluster.session_records()
            if self.sessions.shared is not None:
                self.cluster.on_session_hand_over = self.sessions.hand_over
        #: The channels this service serves now.
        self.channels: Set[RpcChannel] = set()
        #: Set by :meth:`drain`: new connections are refused (HTTP 503), health routes say so.
        self.draining = False

    async def start(self) -> None:
        """Join the cluster before serving (see :meth:`Cluster.start <fastwsrpc.cluster.Cluster.start>`).

        The native server calls it before it accepts; a FastAPI app awaits it in its
        lifespan, so that the first connection's first routed call finds a client held
        by another node. Idempotent; without it, the first connection starts the node.
        """
        await self.cluster.start()

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop taking connections, let calls in flight finish, then close each connection with 1012.

        The closes are spread over the ``timeout`` window (connection *i* of *n*
        no sooner than ``timeout * i / n`` seconds in), so that clients do not
        all come back in the same second; each waits for its running calls
        until then, but not past the window. 1012 is "service restart": our
        clients reconnect (to the next URL they know), with their sessions.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        targets = sorted(self.channels, key=lambda ch: ch.id)
        count = len(targets)
        if count:
            logger.info("draining %d connections over %.3g s", count, timeout)

        async def close_one(index: int, channel: RpcChannel) -> None:
            delay = start + timeout * index / count - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # its turn in the window
            while channel.running_count and not channel.is_closed() and loop.time() < start + timeout:
                await asyncio.sleep(_DRAIN_POLL)  # calls in flight finish first
            if not channel.is_closed():
                await _quiet_close(channel, CLOSE_SERVICE_RESTART, "service restart")

        await asyncio.gather(*(close_one(i, ch) for i, ch in enumerate(targets)), return_exceptions=True)

    async def open_session(
        self, header: Optional[str], query: Optional[str]
    ) -> Tuple[Optional[Session], Optional[str]]:
        """The session a handshake asked for (header, or the query parameter browsers use), and the header to answer.

        ``(None, None)``: no session (none asked for, or ``session_ttl=None``).
        With a cluster broker that keeps session records, a session another node
        held is taken over from there (see :mod:`fastwsrpc.sessions`).
        """
        session, resumed = await self.sessions.open_shared(header or query)
        if session is None:
            return None, None
        return session, f"{session.id}; resumed={int(resumed)}"

    async def publish(self, topic: str, data: Any = None) -> Optional[Tuple[str, int]]:
        """Send ``data`` to every subscriber of ``topic``: on every node when a broker is set, each once.

        With topic history on, returns the publication's ``(epoch, offset)``.
        """
        return await self.cluster.publish_topic(topic, data)

    async def serve(
        self,
        transport: Transport,
        *,
        context: Dict[str, Any],
        subprotocol: Optional[str],
        agreed: FrozenSet[str],
        name: Any,
        identify_with: Any,
        speedups: Any = None,
        channels: Optional[Set[RpcChannel]] = None,
        session: Optional[Session] = None,
        session_notice: bool = False,
        tasks: Optional[Set[asyncio.Task[None]]] = None,
    ) -> None:
        """Build the channel for an accepted connection, register it, read until it ends, release it.

        ``name`` is the client id the route gave (``{client_id}``) or the
        authenticator returned; without one, ``identify(identify_with)`` names
        it, and failing that the channel's id. ``channels`` is the native
        server's set of open channels (for drain and shutdown). ``session``: the
        client's (see :mod:`fastwsrpc.sessions`); ``session_notice``: tell it in a
        first message ``$/session`` too (browsers cannot read handshake headers).

        ``tasks`` (the native server's set of its serving tasks): this returns
        as soon as nothing waits for the reader, the connection still open, and
        its transport wakes a task (in ``tasks`` until it ends) when something
        does, which reads on and releases the connection at its end (see
        ``RpcChannel.run``'s ``park``). An idle connection then holds no task
        and no coroutine frame: 2 kB less for each.
        """
        from .channel import RpcChannel

        channel = RpcChannel(
            self.methods,
            transport,
            settings=self.settings,
            context=context,
            subprotocol=subprotocol,
            connect_callbacks=self.on_connect,
            disconnect_callbacks=self.on_disconnect,
            error_callbacks=self.on_error,
            topics=self.topics,
            interceptors=self.interceptors,
            peer_features=agreed,
            speedups=speedups,
            session=session,
        )
        cluster = self.cluster
        attaching = False
        client_id = ""
        ended_cleanly = parked = False
        try:
            if name is None and self.identify is not None:
                name = self.identify(identify_with)
                if inspect.isawaitable(name):
                    name = await name
            client_id = str(name) if name is not None else channel.id
            attaching = True
            try:
                await cluster.attach(client_id, channel)
            except RpcDuplicateClientError:
                logger.warning("client id %r is already connected; refusing %s", client_id, transport.peer or "?")
                await channel.close(CLOSE_POLICY_VIOLATION, "client id already connected")
                ended_cleanly = True
                return
            self.channels.add(channel)
            if channels is not None:
                channels.add(channel)
            if session is not None and session_notice:
                ttl = self.sessions.ttl
                await channel.notify(SESSION_NOTICE, {"id": session.id, "resumed": session.resumed, "ttl": ttl})
            await channel.on_connect()
            if tasks is None:
                await channel.run()
            else:
                await channel.run(_Parked(self, channel, channels, tasks, client_id))
                parked = not channel.is_closed()  # run returned with the connection open: it parked
            ended_cleanly = True
        finally:
            if not parked:
                await self._release(channel, channels, client_id if attaching else None, ended_cleanly)

    async def _read_on(self, parked: _Parked) -> None:
        """The rest of :meth:`serve` for a connection that parked: read until it ends or parks again."""
        channel = parked.channel
        ended_cleanly = parks_again = False
        try:
            await channel.run(parked)
            parks_again = not channel.is_closed()
            ended_cleanly = True
        finally:
            if not parks_again:
                await self._release(channel, parked.channels, parked.client_id, ended_cleanly)

    async def _release(
        self, channel: RpcChannel, channels: Optional[Set[RpcChannel]], client_id: Optional[str], ended_cleanly: bool
    ) -> None:
        """Everything ``serve`` took for the connection, given back (``client_id``: its cluster registration)."""
        self.channels.discard(channel)
        if channels is not None:
            channels.discard(channel)
        if not channel.is_closed():
            # identify, attach or on_connect failed, or the serving task was
            # cancelled: the connection ends here (1011), its watchdog and
            # timers with it, and the disconnect callbacks run once.
            if not ended_cleanly:
                logger.warning(
                    "serving %s failed before its read loop ended; closing (1011)", channel.socket.peer or "?"
                )
            await _quiet_close(channel)
        if client_id is not None:
            try:
                await self.cluster.detach(client_id, channel)
            except Exception:  # the broker's trouble: the registration expires with its TTL
                logger.exception("could not detach client %r from the cluster", client_id)


class _Parked:
    """What a parked connection's transport calls when there is something for its reader (see ``RpcService.serve``).

    A task reads on, in the reader's context, and releases the connection at its
    end. This is all a parked connection holds of its serving: 72 bytes.
    """

    __slots__ = ("channel", "channels", "client_id", "service", "tasks")

    def __init__(
        self,
        service: RpcService,
        channel: RpcChannel,
        channels: Optional[Set[RpcChannel]],
        tasks: Set[asyncio.Task[None]],
        client_id: str,
    ) -> None:
        self.service = service
        self.channel = channel
        self.channels = channels
        self.tasks = tasks
        self.client_id = client_id

    def __call__(self) -> None:
        task = self.channel.reader_task(self.service._read_on(self))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


#: The service's own keywords, for "did you mean" on a misspelt one.
_SERVICE_NAMES = tuple(
    name
    for name in inspect.signature(RpcService.__init__).parameters
    if name not in ("self", "owner", "limits", "suggest")
)


async def _quiet_close(channel: RpcChannel, code: int = CLOSE_INTERNAL_ERROR, reason: str = "internal error") -> None:
    try:
        await channel.close(code, reason)
    except BaseException:  # the socket is gone, or we are being cancelled: the channel is closed all the same
        channel.abort(reason)
