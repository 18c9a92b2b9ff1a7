"""Cluster: call, notify and broadcast to connections held by any node.

Each server process (a *node*) owns one :class:`Cluster`. The endpoint attaches
every connection under its client id; the cluster keeps the connections of this
node in a dict and tells the broker who is connected where. A call to a client id
is then a dict lookup when the connection is here, and one request through the
broker (to the node that holds it) when it is not. The holding node makes the call
with the channel's public API and sends the answer back.

What crosses the broker is the JSON-RPC 2.0 frame itself (``encode_request`` on
the way there, ``encode_result`` / ``encode_error`` on the way back) behind a
one-line routing header: see :mod:`fastwsrpc.cluster.base`.

Why it cannot deadlock: no broker reads its next message only after a handler
finished. Each routed call is served in a task of its own, so node A serving a
call that goes to node B, whose client calls back into node A, is a chain of
independent tasks, as nested calls are on a single connection.

Why nothing waits forever: routed calls in flight are counted against
``max_routed_calls`` (over it: ``RpcBackpressureError`` at once, as a local
channel does); each carries its timeout to the holding node and waits a little
longer itself; a node found dead (its presence gone, or the broker telling us
nobody listens there any more) fails the calls waiting on it; and a lost broker
connection fails every call that needed it with ``RpcBrokerUnavailableError``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple, cast

import msgspec

from ..channel import RpcChannel
from ..errors import (
    RemoteValueError,
    RpcBackpressureError,
    RpcBrokerUnavailableError,
    RpcChannelClosedError,
    RpcClientNotFoundError,
    RpcDuplicateClientError,
    RpcError,
    RpcServerOverloadedError,
    RpcTimeoutError,
    error_for_code,
)
from ..protocol import Response, encode_error, encode_notification, encode_request, encode_result
from ..topics import HistoryPolicy, HistorySlice, Position
from .base import Broker, Head, HistoryBroker, RpcNodeGoneError, TopicBroker, join_frame, spawn, split_frame
from .local import LocalBroker

logger = logging.getLogger("fastwsrpc.cluster")

__all__ = ["REPLACED_CLOSE_CODE", "REPLACED_REASON", "Cluster"]

#: Close code and reason of a connection replaced by a newer one under the same id.
#: 4000 (application range) so that a client can tell it from an ordinary close and
#: not reconnect, which would replace the newer connection in turn.
REPLACED_CLOSE_CODE = 4000
REPLACED_REASON = "replaced by a newer connection"

#: A routed call waits this much longer than its own timeout: the holding node times
#: the call out itself and says so; this margin covers the trip back.
_REPLY_MARGIN = 2.0
#: Requests of the cluster's own (kick, has, join, leave) wait at most this long.
_CONTROL_TIMEOUT = 5.0
#: A client's location is reused this long without asking the broker again.
_LOCATION_TTL = 1.0
_LOCATION_CACHE_MAX = 10_000

_DEFAULT: Any = object()


class _Call(msgspec.Struct, gc=False):
    """The part of a JSON-RPC request the holding node needs (``jsonrpc`` is ignored)."""

    method: str
    params: Any = None
    id: Any = None


class _Note(msgspec.Struct, gc=False):
    method: str
    params: Any = None


_decode_call = msgspec.json.Decoder(_Call).decode
_decode_note = msgspec.json.Decoder(_Note).decode
_decode_response = msgspec.json.Decoder(Response).decode


def _reply(status: str, message: str = "", body: bytes = b"") -> bytes:
    return join_frame(Head(s=status, m=message), body)


class Cluster:
    """The scale-out layer of one node: route calls, notifications and broadcasts by client id.

    ``broker`` is the engine shared by the nodes (default: an in-process
    :class:`LocalBroker`, a one-node cluster). ``on_duplicate`` says what a second
    connection under an id already connected does: ``"replace"`` closes the older
    one (code 4000, ``"replaced by a newer connection"``), ``"reject"`` refuses the
    newer one (``attach`` raises :class:`~fastwsrpc.errors.RpcDuplicateClientError`).
    A node's clients vanish from the cluster at most ``presence_ttl`` seconds after
    it dies; it refreshes its presence every ``heartbeat_interval`` seconds.

    Constructing it needs no event loop. :meth:`start` joins the cluster (the
    servers call it before they accept); anything that needs the broker starts it
    first otherwise.
    """

    def __init__(
        self,
        broker: Optional[Broker] = None,
        *,
        on_duplicate: str = "replace",
        presence_ttl: float = 15.0,
        heartbeat_interval: float = 5.0,
        max_routed_calls: int = 1000,
    ) -> None:
        if on_duplicate not in ("replace", "reject"):
            raise ValueError(f'on_duplicate must be "replace" or "reject", got {on_duplicate!r}')
        if not 0 < heartbeat_interval < presence_ttl:
            raise ValueError(
                f"heartbeat_interval ({heartbeat_interval}) must be > 0 and less than presence_ttl ({presence_ttl})"
            )
        if max_routed_calls <= 0:
            raise ValueError(f"max_routed_calls must be > 0, got {max_routed_calls}")
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.on_duplicate = on_duplicate
        #: Called with ``(topic, data)`` for every topic message on this node (the endpoint's TopicHub),
        #: and with ``(topic, data, epoch, offset)`` for a publication kept in the topic's history.
        self.on_topic: Optional[Callable[..., Any]] = None
        #: What every topic's history keeps (see :meth:`enable_topic_history`); ``None``: no history.
        self.topic_history: Optional[HistoryPolicy] = None
        self._per_topic = False
        #: Topics with a subscriber on this node (see :meth:`watch_topic`).
        self._watched: Set[str] = set()
        #: Called with a session id when another node takes that session over (the endpoint's
        #: SessionStore.hand_over): the ids of its calls still running here.
        self.on_session_hand_over: Optional[Callable[[str], Awaitable[List[str]]]] = None
        self.presence_ttl = float(presence_ttl)
        self.heartbeat_interval = float(heartbeat_interval)
        self.max_routed_calls = max_routed_calls
        #: This node's id in the cluster (fresh per process: a restarted node is a new node).
        self.node_id: str = uuid.uuid4().hex
        self._channels: Dict[str, RpcChannel] = {}
        #: Ids attached here whose claim on the broker is not settled yet (see attach).
        self._claiming: Set[str] = set()
        self._groups: Dict[str, Set[str]] = {}
        self._located: Dict[str, Tuple[str, float]] = {}
        self._locating: Dict[str, asyncio.Task[Optional[str]]] = {}
        self._serving: Dict[Tuple[str, int], asyncio.Task[Any]] = {}
        self._call_numbers = itertools.count(1)
        self._routed = 0
        self._tasks: Set[asyncio.Task[Any]] = set()
        self._starting: Optional[asyncio.Future[Any]] = None
        self._supervisor: Optional[asyncio.Task[Any]] = None
        self._wake: Optional[asyncio.Event] = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Cluster node={self.node_id} local={len(self._channels)} broker={self.broker!r}>"

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Join the cluster: connect to the broker, listen, and learn who is connected where.

        When it returns, a call to a client held by another node finds it: on Redis
        presence is in Redis itself; on NATS, where each node keeps its own view of
        presence, the node has asked its peers and each has answered (for at most the
        broker's ``sync_timeout``). Idempotent, and concurrent calls share one start.
        A broker that cannot be reached does not fail it: the node serves its own
        connections and keeps trying in the background (a call that needs the broker
        meanwhile raises ``RpcBrokerUnavailableError``).

        The native server calls it before it accepts a connection; with FastAPI, call
        ``await endpoint.service.start()`` in the app's lifespan. Without it, the first
        connection or routed call starts the node, and waits for it.
        """
        await self._ensure_started()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has completed (the node has joined its cluster)."""
        return self._supervisor is not None

    async def _ensure_started(self) -> None:
        if self._supervisor is not None:
            return
        if self._closed:
            raise RpcBrokerUnavailableError("the cluster is closed")
        if self._starting is not None:
            await asyncio.shield(self._starting)
            return
        loop = asyncio.get_running_loop()
        self._starting = loop.create_future()
        try:
            self._wake = asyncio.Event()
            await self.broker.start(self.node_id, self._serve_request, self._on_message, self._announce_soon)
            self._supervisor = loop.create_task(self._heartbeats())
        finally:
            self._starting.set_result(None)
            self._starting = None

    def _announce_soon(self) -> None:
        """Broker (re)connected, or a new peer asked: send the full state without waiting."""
        if self._wake is not None:
            self._wake.set()

    async def _heartbeats(self) -> None:
        """Refresh this node's presence every interval (at once when woken); watch peers.

        The heartbeat carries every local client and its groups, so the same step
        that keeps presence alive also re-announces everything after an outage.
        """
        assert self._wake is not None
        wake = self._wake
        while not self._closed:
            try:
                await asyncio.wait_for(wake.wait(), self.heartbeat_interval)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            self._prune_locations()
            if not self.broker.available:
                continue
            try:
                snapshot = {
                    cid: tuple(self._groups.get(cid, ())) for cid in self._channels if cid not in self._claiming
                }
                await self.broker.heartbeat(self.node_id, snapshot, self.presence_ttl)
                await self.broker.check_peers()
            except RpcBrokerUnavailableError as exc:
                logger.debug("cluster node %s: heartbeat skipped: %s", self.node_id, exc)
            except Exception:
                logger.exception("cluster node %s: heartbeat failed", self.node_id)

    async def close(self) -> None:
        """Leave the cluster: forget this node's clients on the broker, stop, disconnect.

        Local connections are not closed (the endpoint owns them); routed calls
        waiting on this node fail with ``RpcChannelClosedError``.
        """
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self.broker.available:
            try:
                await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            self.broker.unregister(cid, self.node_id, self._groups.get(cid, ()))
                            for cid in self._channels
                        )
                    ),
                    _CONTROL_TIMEOUT,
                )
            except (RpcError, asyncio.TimeoutError) as exc:
                logger.debug("cluster node %s: could not unregister on close: %s", self.node_id, exc)
        for task in list(self._serving.values()) + list(self._tasks):
            task.cancel()
        await self.broker.close()
        self._channels.clear()
        self._groups.clear()

    # ---------------------------------------------------------- connections
    def local_clients(self) -> List[str]:
        """Client ids connected to this node."""
        return list(self._channels)

    async def attach(self, client_id: str, channel: RpcChannel) -> None:
        """Make ``channel`` reachable cluster-wide as ``client_id`` (the endpoint calls it).

        A previous connection under the same id, here or on another node, is closed
        (``on_duplicate="replace"``) or this one is refused with
        :class:`~fastwsrpc.errors.RpcDuplicateClientError` (``"reject"``). The broker
        being down does not fail it: the connection is served locally and announced
        when the broker is back.
        """
        await self._ensure_started()
        old = self._channels.get(client_id)
        if old is not None and old is not channel and not old.is_closed():
            if self.on_duplicate == "reject":
                raise RpcDuplicateClientError(f"client {client_id!r} is already connected to this node")
            self._drop_local(client_id)
            spawn(self._tasks, old.close(REPLACED_CLOSE_CODE, REPLACED_REASON))
        self._channels[client_id] = channel
        self._groups.pop(client_id, None)  # its groups, made by its first join (an idle client joins none)
        self._located.pop(client_id, None)
        if not self.broker.available:
            return
        # Held here already (a second local connection is refused or replaced at
        # once), but announced by attach alone: a heartbeat meanwhile would claim
        # the id before the check below refuses it (taking the presence of the
        # client that holds it) or before register names the node to kick.
        self._claiming.add(client_id)
        try:
            if self.on_duplicate == "reject":
                holder = await self.broker.locate(client_id)
                if holder is not None and holder != self.node_id and await self._remote_holds(holder, client_id):
                    self._drop_local(client_id)
                    raise RpcDuplicateClientError(f"client {client_id!r} is already connected to node {holder}")
            previous = await self.broker.register(client_id, self.node_id, self.presence_ttl)
            if previous is not None and previous != self.node_id and self.on_duplicate == "replace":
                await self._control(previous, Head(op="kick", c=client_id))
                # The old node's last heartbeat may have raced the kick: claim the id again.
                await self.broker.register(client_id, self.node_id, self.presence_ttl)
        except RpcBrokerUnavailableError as exc:
            logger.debug("cluster: %r attached locally only (broker down: %s)", client_id, exc)
        finally:
            self._claiming.discard(client_id)

    async def detach(self, client_id: str, channel: RpcChannel) -> None:
        """Forget ``channel`` (the endpoint calls it when the connection ends).

        Only if it is still the connection under ``client_id``: a connection that
        was replaced must not take its successor's registration with it.
        """
        if self._channels.get(client_id) is not channel:
            return
        groups = self._drop_local(client_id)
        if self.broker.available:
            try:
                await self.broker.unregister(client_id, self.node_id, groups)
            except RpcBrokerUnavailableError:
                pass  # its presence expires with the TTL, and no heartbeat renews it

    def _drop_local(self, client_id: str) -> Set[str]:
        self._channels.pop(client_id, None)
        return self._groups.pop(client_id, set())

    async def _remote_holds(self, node_id: str, client_id: str) -> bool:
        try:
            head, _ = split_frame(await self.broker.request(node_id, join_frame(Head(op="has", c=client_id)), 2.0))
        except (RpcNodeGoneError, RpcTimeoutError):
            return False
        return head.s == "ok"

    async def _control(self, node_id: str, head: Head) -> Head:
        """A request of the cluster's own to another node; its reply header."""
        try:
            reply, _ = split_frame(await self.broker.request(node_id, join_frame(head), _CONTROL_TIMEOUT))
        except (RpcNodeGoneError, RpcTimeoutError) as exc:
            return Head(s="gone", m=str(exc))
        return reply

    # ---------------------------------------------------------- locating
    async def _locate(self, client_id: str, fresh: bool = False) -> Optional[str]:
        """The node holding ``client_id``; recent answers are reused for a second.

        A stale answer is harmless: the node asked answers "not found" or is gone,
        and the caller then asks again with ``fresh=True`` (the call was not made).
        Calls to the same id that miss the cache together share one lookup: a burst
        of calls to a client not called lately is one broker round trip, not one per
        call (on Redis, each would also hold a pooled connection meanwhile, and the
        pool is bounded). A ``fresh`` lookup is never shared: it must not take the
        answer of one that started before the failure it follows.
        """
        if fresh:
            return await self._lookup(client_id)
        cached = self._located.get(client_id)
        if cached is not None and cached[1] > asyncio.get_running_loop().time():
            return cached[0]
        lookup = self._locating.get(client_id)
        if lookup is None:
            lookup = asyncio.get_running_loop().create_task(self._lookup(client_id))
            self._locating[client_id] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(client_id, done))
        # Shielded: one caller giving up must not cancel the lookup the others wait on.
        return await asyncio.shield(lookup)

    def _lookup_done(self, client_id: str, lookup: asyncio.Task[Optional[str]]) -> None:
        if self._locating.get(client_id) is lookup:
            del self._locating[client_id]
        if not lookup.cancelled():
            lookup.exception()  # retrieved, even if every caller gave up meanwhile

    async def _lookup(self, client_id: str) -> Optional[str]:
        node = await self.broker.locate(client_id)
        if node is None:
            self._located.pop(client_id, None)
        else:
            if len(self._located) >= _LOCATION_CACHE_MAX:
                self._located.clear()
            self._located[client_id] = (node, asyncio.get_running_loop().time() + _LOCATION_TTL)
        return node

    def _prune_locations(self) -> None:
        if self._located:
            now = asyncio.get_running_loop().time()
            for cid in [cid for cid, (_, until) in self._located.items() if until <= now]:
                del self._located[cid]

    async def _route(self, client_id: str, head: Head, body: bytes, timeout: Optional[float]) -> Tuple[Head, bytes]:
        """Send a request to whichever node holds ``client_id``; its reply.

        Retried once, after asking the broker afresh, when the node asked does not
        hold the client (any more) or is gone: nothing was done there, so the
        retry cannot run a call twice.
        """
        data = join_frame(head, body)
        node = await self._locate(client_id)
        fresh = False
        while True:
            if node is None or (node == self.node_id and client_id not in self._channels):
                # (The broker naming this node for a client it does not hold: it left a moment ago.)
                self._located.pop(client_id, None)
                raise RpcClientNotFoundError(f"no client {client_id!r} is connected to the cluster")
            gone: Optional[RpcNodeGoneError] = None
            try:
                reply, rest = split_frame(await self.broker.request(node, data, timeout))
            except RpcNodeGoneError as exc:
                if fresh or exc.delivered:
                    raise  # it may have run there: never send it again elsewhere
                gone = exc
            else:
                if reply.s != "notfound" or fresh:
                    return reply, rest
            previous, node, fresh = node, await self._locate(client_id, fresh=True), True
            if node == previous:
                if gone is not None:
                    raise gone  # the broker still names the dead node: its presence has not expired yet
                return reply, rest

    # ---------------------------------------------------------- public API
    async def call(self, client_id: str, method: str, params: Any = None, timeout: Optional[float] = None) -> Response:
        """Call ``method`` on the client connected as ``client_id``, on whichever node.

        Returns the :class:`~fastwsrpc.protocol.Response`; raises exactly what a
        local ``channel.call`` raises (remote errors, ``RpcTimeoutError``,
        ``RpcChannelClosedError``), plus ``RpcClientNotFoundError`` for an id
        connected nowhere and ``RpcBrokerUnavailableError`` when the call needs the
        broker and it is down. ``timeout=None`` uses the holding connection's
        ``default_response_timeout``; a dead holding node fails the call anyway.
        """
        channel = self._channels.get(client_id)
        if channel is not None:
            if timeout is None:
                return await channel.call(method, params)
            return await channel.call(method, params, timeout=timeout)
        if self._routed >= self.max_routed_calls:
            raise RpcBackpressureError(
                f"{self._routed} routed calls in flight on this node; the limit is {self.max_routed_calls}"
            )
        await self._ensure_started()
        number = next(self._call_numbers)
        frame = encode_request(number, method, params)
        head = Head(op="call", c=client_id, t=timeout, f=self.node_id, i=number)
        wait = None if timeout is None else timeout + _REPLY_MARGIN
        self._routed += 1
        try:
            reply, body = await self._route(client_id, head, frame, wait)
        except asyncio.CancelledError:
            self._cancel_remote(client_id, number)
            raise
        finally:
            self._routed -= 1
        status = reply.s
        if status == "ok":
            response = _decode_response(body)
            error = response.error
            if error is not None:
                raise error_for_code(error.code, error.message, error.data, response)
            return response
        raise _routing_error(status, reply.m, client_id)

    def _cancel_remote(self, client_id: str, number: int) -> None:
        """The caller gave up: tell the holding node to cancel the call (best effort)."""
        cached = self._located.get(client_id)
        if cached is None or not self.broker.available:
            return
        data = join_frame(Head(op="cancel", f=self.node_id, i=number))
        spawn(self._tasks, _quietly(self.broker.send(cached[0], data)))

    async def notify(self, client_id: str, method: str, params: Any = None) -> None:
        """Send a notification to ``client_id``, on whichever node; never answered.

        Returns once the frame is handed to the socket (here) or to the broker.
        """
        channel = self._channels.get(client_id)
        if channel is not None:
            await channel.notify(method, params)
            return
        await self._ensure_started()
        data = join_frame(Head(op="notify", c=client_id), encode_notification(method, params))
        node = await self._locate(client_id)
        for attempt in (1, 2):
            if node is None or (node == self.node_id and client_id not in self._channels):
                raise RpcClientNotFoundError(f"no client {client_id!r} is connected to the cluster")
            if await self.broker.send(node, data):
                return
            if attempt == 1:
                node = await self._locate(client_id, fresh=True)
        raise RpcNodeGoneError(f"the node holding client {client_id!r} is gone", delivered=False)

    async def broadcast(self, method: str, params: Any = None, group: Optional[str] = None) -> None:
        """A notification to every connection, or every member of ``group``, on every node.

        Each node delivers it to its own connections, once each.
        """
        await self._ensure_started()
        await self.broker.publish(join_frame(Head(op="bcast", g=group), encode_notification(method, params)))

    def enable_topic_history(self, policy: HistoryPolicy) -> None:
        """Keep every topic's last ``policy.size`` publications in the broker (``TopicHub.attach`` calls it).

        Raises ``TypeError`` for a broker that keeps no history (one written
        before history existed): a hub must not believe it can recover from one.
        """
        enable = getattr(self.broker, "enable_history", None)
        if enable is None:
            raise TypeError(
                f"{type(self.broker).__name__} keeps no topic history (no enable_history): "
                "use LocalBroker, RedisBroker or NatsBroker, or topic_history=0"
            )
        enable(policy)
        self.topic_history = policy

    @property
    def per_topic(self) -> bool:
        """Whether topic publications go only to the nodes that watch the topic (off by default).

        Off, a publication is one broker message that every node receives and decodes,
        subscribers or not. On (the TopicHub turns it on when it attaches, as it then
        calls :meth:`watch_topic` and :meth:`unwatch_topic`), a node receives the topics
        it watches, and ``on_topic`` is called for those only. Every node of a cluster
        should agree: a node with it off still hears every publication, but one with it
        on is heard only by the nodes that watch the topic. A broker that cannot route
        by topic (one written before routing existed) keeps broadcasting.
        """
        return self._per_topic

    @per_topic.setter
    def per_topic(self, on: bool) -> None:
        on = bool(on)
        if on == self._per_topic:
            return
        self._per_topic = on
        route = getattr(self.broker, "route_topics", None)
        if route is not None:
            route(on)
        watch = getattr(self.broker, "watch_topic", None)
        if on and watch is not None:
            for topic in self._watched:
                watch(topic)  # topics watched before routing was on (their waiters are not needed)

    def watch_topic(self, topic: str) -> Optional[Awaitable[None]]:
        """``topic`` has a subscriber on this node now (the TopicHub calls it when a topic gains
        its first local subscriber): have the broker deliver its publications here.

        The answer completes once the broker does (``None``: nothing to wait for, as
        when ``per_topic`` is off and every publication reaches every node anyway); it
        never raises, and completes within the broker's timeout even if the broker does
        not confirm (while the broker is unreachable nothing can be promised, as for any
        message). Called synchronously, with or without a running event loop.
        """
        self._watched.add(topic)
        if not self._per_topic:
            return None
        watch = getattr(self.broker, "watch_topic", None)
        if watch is None:
            return None
        waiter: Optional[Awaitable[None]] = watch(topic)
        return waiter

    def unwatch_topic(self, topic: str) -> None:
        """``topic``'s last subscriber on this node left. The broker lets its subscription go
        a little later (a topic watched again meanwhile keeps it, and loses nothing)."""
        self._watched.discard(topic)
        if self._per_topic:
            unwatch = getattr(self.broker, "unwatch_topic", None)
            if unwatch is not None:
                unwatch(topic)

    def watched_topics(self) -> List[str]:
        """Topics with a subscriber on this node (as told by :meth:`watch_topic`)."""
        return list(self._watched)

    async def publish_topic(self, topic: str, data: Any = None) -> Optional[Position]:
        """Offer ``data`` to the subscribers of ``topic`` on every node (each node's ``on_topic``).

        With history on, the broker numbers it first (so that every node agrees on
        its offset) and the answer is its ``(epoch, offset)``; else ``None``. With
        ``per_topic`` on, only the nodes watching ``topic`` receive it.
        """
        await self._ensure_started()
        body = msgspec.json.encode(data)
        if self.topic_history is None:
            frame = join_frame(Head(op="topic", g=topic), body)
            if self._per_topic and hasattr(self.broker, "publish_topic"):
                await cast(TopicBroker, self.broker).publish_topic(topic, frame)
            else:
                await self.broker.publish(frame)
            return None
        return await cast(HistoryBroker, self.broker).publish_history(topic, body)

    async def read_topic_history(self, topic: str, since: Optional[Position]) -> HistorySlice:
        """``topic``'s position and the publications after ``since`` its history still holds."""
        if self.topic_history is None:
            raise RuntimeError("topic history is off on this cluster (see enable_topic_history)")
        await self._ensure_started()
        return await cast(HistoryBroker, self.broker).read_history(topic, since)

    def session_records(self) -> Optional[Any]:
        """The session records other nodes can resume from (a ``fastwsrpc.sessions.SharedRecords``),
        or ``None`` when the broker keeps none."""
        if not hasattr(self.broker, "session_take") or getattr(self.broker, "private", False):
            return None
        from .sessions import ClusterRecords

        return ClusterRecords(self)

    async def node_alive(self, node_id: str) -> bool:
        """Whether ``node_id`` answers (a dead node's requests fail at once on Redis and NATS)."""
        if node_id == self.node_id:
            return True
        return (await self._control(node_id, Head(op="ping"))).s == "ok"

    async def join(self, client_id: str, group: str) -> None:
        """Add the connection ``client_id`` (on any node) to ``group``.

        Membership belongs to the connection: it ends when the connection does.
        """
        if client_id in self._channels:
            await self._join_local(client_id, group)
            return
        await self._ensure_started()
        reply, _ = await self._route(client_id, Head(op="join", c=client_id, g=group), b"", _CONTROL_TIMEOUT)
        if reply.s != "ok":
            raise _routing_error(reply.s, reply.m, client_id)

    async def leave(self, client_id: str, group: str) -> None:
        """Remove the connection ``client_id`` (on any node) from ``group``."""
        if client_id in self._channels:
            await self._leave_local(client_id, group)
            return
        await self._ensure_started()
        reply, _ = await self._route(client_id, Head(op="leave", c=client_id, g=group), b"", _CONTROL_TIMEOUT)
        if reply.s != "ok":
            raise _routing_error(reply.s, reply.m, client_id)

    async def clients(self, group: Optional[str] = None) -> List[str]:
        """Ids connected anywhere in the cluster (members of ``group`` when given), sorted."""
        await self._ensure_started()
        return sorted(set(await self.broker.clients(group)))

    async def _join_local(self, client_id: str, group: str) -> None:
        self._groups.setdefault(client_id, set()).add(group)
        if self._supervisor is None:
            await self._ensure_started()
        try:
            await self.broker.join(group, client_id, self.node_id, self.presence_ttl)
        except RpcBrokerUnavailableError:
            pass  # this node is authoritative; the next heartbeat tells the broker

    async def _leave_local(self, client_id: str, group: str) -> None:
        self._groups.get(client_id, set()).discard(group)
        if self._supervisor is None:
            await self._ensure_started()
        try:
            await self.broker.leave(group, client_id)
        except RpcBrokerUnavailableError:
            pass

    # ---------------------------------------------------------- serving peers
    async def _serve_request(self, data: bytes) -> bytes:
        """A request from another node; never raises (a failure is a reply)."""
        try:
            head, body = split_frame(data)
        except (ValueError, msgspec.DecodeError) as exc:
            return _reply("error", f"malformed cluster message: {exc}")
        op = head.op
        if op == "call":
            return await self._serve_call(head, body)
        if op == "ping":
            return _reply("ok")
        if op == "session":
            hand_over = self.on_session_hand_over
            running = await hand_over(head.c) if hand_over is not None else []
            return _reply("ok", body=msgspec.json.encode(running))
        channel = self._channels.get(head.c)
        if channel is None or channel.is_closed():
            return _reply("notfound", f"client {head.c!r} is not connected to node {self.node_id}")
        if op == "has":
            return _reply("ok")
        if op == "kick":
            self._drop_local(head.c)
            spawn(self._tasks, channel.close(REPLACED_CLOSE_CODE, REPLACED_REASON))
            return _reply("ok")
        if op in ("join", "leave") and head.g is not None:
            if op == "join":
                await self._join_local(head.c, head.g)
            else:
                await self._leave_local(head.c, head.g)
            return _reply("ok")
        return _reply("error", f"unknown cluster operation {op!r}")

    async def _serve_call(self, head: Head, body: bytes) -> bytes:
        channel = self._channels.get(head.c)
        if channel is None or channel.is_closed():
            return _reply("notfound", f"client {head.c!r} is not connected to node {self.node_id}")
        if len(self._serving) >= self.max_routed_calls:
            return _reply("overloaded", f"node {self.node_id} serves {len(self._serving)} routed calls already")
        try:
            call = _decode_call(body)
        except msgspec.DecodeError as exc:
            return _reply("error", f"malformed routed call: {exc}")
        key = (head.f, head.i)
        task = asyncio.current_task()
        if task is not None:
            self._serving[key] = task
        try:
            if head.t is None:
                response = await channel.call(call.method, call.params)
            else:
                response = await channel.call(call.method, call.params, timeout=head.t)
        except RemoteValueError as exc:
            return _reply("ok", body=encode_error(call.id, exc.code, exc.message, exc.data))
        except RpcTimeoutError as exc:
            return _reply("timeout", str(exc))
        except RpcChannelClosedError as exc:
            return _reply("closed", str(exc))
        except RpcBackpressureError as exc:
            return _reply("backpressure", str(exc))
        except asyncio.CancelledError:
            if self._closed:
                return _reply("closed", f"node {self.node_id} is shutting down")
            raise
        except Exception as exc:
            return _reply("error", f"{type(exc).__name__}: {exc}")
        finally:
            self._serving.pop(key, None)
        try:
            return _reply("ok", body=encode_result(call.id, response.result))
        except (TypeError, ValueError, msgspec.EncodeError) as exc:  # pragma: no cover - it came from JSON
            return _reply("error", f"result could not be encoded: {exc}")

    def _on_message(self, data: bytes) -> None:
        """A one-way message: a notification, a broadcast, a cancellation."""
        try:
            head, body = split_frame(data)
        except (ValueError, msgspec.DecodeError):
            logger.warning("cluster node %s: malformed message dropped", self.node_id)
            return
        op = head.op
        if op == "topic":
            on_topic = self.on_topic
            if self._per_topic and head.g not in self._watched:
                return  # a topic nobody here subscribes to (from a node still broadcasting, or lingering)
            if on_topic is not None and head.g is not None:
                try:
                    if head.e:
                        on_topic(head.g, msgspec.json.decode(body), head.e, head.o)
                    else:
                        on_topic(head.g, msgspec.json.decode(body))
                except msgspec.DecodeError:
                    logger.warning("cluster node %s: malformed topic message dropped", self.node_id)
            return
        if op == "cancel":
            task = self._serving.pop((head.f, head.i), None)
            if task is not None:
                task.cancel()
            return
        try:
            note = _decode_note(body)
        except msgspec.DecodeError:
            logger.warning("cluster node %s: malformed notification dropped", self.node_id)
            return
        if op == "notify":
            channel = self._channels.get(head.c)
            if channel is not None:
                spawn(self._tasks, _quietly(channel.notify(note.method, note.params)))
        elif op == "bcast":
            if head.g is None:
                targets = list(self._channels.values())
            else:
                group = head.g
                targets = [ch for cid, ch in self._channels.items() if group in self._groups.get(cid, ())]
            if targets:
                spawn(self._tasks, _deliver(targets, note.method, note.params))


def _routing_error(status: str, message: str, client_id: str) -> RpcError:
    """The exception for a reply that is not a JSON-RPC answer: what a local call raises."""
    if status == "notfound" or status == "gone":
        return RpcClientNotFoundError(message or f"no client {client_id!r} is connected to the cluster")
    if status == "timeout":
        return RpcTimeoutError(message)
    if status == "closed":
        return RpcChannelClosedError(message)
    if status == "backpressure":
        return RpcBackpressureError(message)
    if status == "overloaded":
        return RpcServerOverloadedError(message)
    return RpcError(message or f"routing failed ({status})")


async def _deliver(channels: List[RpcChannel], method: str, params: Any) -> None:
    """One notification to many local connections, concurrently; a closed one is skipped."""
    await asyncio.gather(*(channel.notify(method, params) for channel in channels), return_exceptions=True)


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except (RpcError, OSError):
        pass
