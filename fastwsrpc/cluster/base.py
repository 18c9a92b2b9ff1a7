"""What the cluster needs from a broker, and the bytes that cross it.

A :class:`Broker` is the whole contract between :class:`~fastwsrpc.cluster.Cluster`
and an engine (in-process, Redis, NATS). It is deliberately small: messages to one
node, to every node, and a request that expects one reply; and a registry of who is
connected where (presence with a TTL, groups, a node heartbeat). Anything that can do
those few things can carry a cluster.

Wire format, the same on every broker: one line of JSON (a routing header, a
:class:`Head`), a newline, then the body, which is a JSON-RPC 2.0 frame exactly as it
would travel on a WebSocket. Nothing is pickled: a node of another version, or a tool
watching the broker (``redis-cli monitor``, ``nats sub '>'``), reads plain JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Awaitable, Callable, Collection, Dict, List, Mapping, Optional, Set, Tuple

import msgspec

from ..errors import RpcBrokerUnavailableError, RpcChannelClosedError, RpcTimeoutError
from ..topics import HistoryPolicy, HistorySlice, Position

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore[assignment]

__all__ = [
    "Broker",
    "Head",
    "HistoryBroker",
    "MessageHandler",
    "NotifyHandler",
    "PendingReplies",
    "RequestHandler",
    "RpcNodeGoneError",
    "SessionBroker",
    "TopicBroker",
    "TopicInterest",
    "join_frame",
    "split_frame",
]

#: ``on_request(data) -> reply``: a node serves a request addressed to it. The broker
#: runs each in a task of its own and never waits on one before reading the next
#: message, so a handler may itself send requests (A calls B which calls A) freely.
RequestHandler = Callable[[bytes], Awaitable[bytes]]
#: ``on_message(data)``: a one-way message (to this node, or to every node). Called
#: synchronously, in the order the broker delivered them; it must not block.
MessageHandler = Callable[[bytes], None]
#: ``on_announce()``: the cluster should announce its full state now (after the broker
#: reconnected, or when a peer that just joined asks for it).
NotifyHandler = Callable[[], None]


class RpcNodeGoneError(RpcChannelClosedError):
    """The node holding the connection is gone (it stopped, crashed, or left the broker).

    An :class:`~fastwsrpc.errors.RpcChannelClosedError`, because that is what the
    caller would see if the connection itself had dropped on a single server.
    ``delivered`` says whether the request may have reached the node before it went:
    only a request the broker proves reached nobody may be sent again elsewhere.
    """

    def __init__(self, message: str = "", delivered: bool = True) -> None:
        super().__init__(message)
        self.delivered = delivered


class Head(msgspec.Struct, omit_defaults=True, gc=False):
    """The routing header in front of every frame (one JSON line).

    Short names because it travels with every routed call:

    * ``op``: ``call``, ``notify``, ``bcast``, ``cancel``, ``kick``, ``has``, ``join``,
      ``leave``, ``ping``, ``session`` (hand a session over); empty in a reply.
    * ``c``: the client id; ``g``: a group; ``t``: the call's timeout in seconds.
    * ``f`` and ``i``: the calling node and its number for the call (to cancel it).
    * ``s`` and ``m``: in a reply, the status (``ok`` means the body is the JSON-RPC
      response; anything else is a routing failure) and a message.
    * ``e`` and ``o``: in a ``topic`` message with history, the publication's epoch
      and offset (absent otherwise, so a node without history reads it as before).
    """

    op: str = ""
    c: str = ""
    g: Optional[str] = None
    t: Optional[float] = None
    f: str = ""
    i: int = 0
    s: str = ""
    m: str = ""
    e: str = ""
    o: int = 0


_head_encoder = msgspec.json.Encoder()
_head_decoder = msgspec.json.Decoder(Head)


def join_frame(head: Head, body: bytes = b"") -> bytes:
    """Header line, newline, body. msgspec never writes a raw newline inside JSON."""
    return _head_encoder.encode(head) + b"\n" + body


def split_frame(data: bytes) -> Tuple[Head, bytes]:
    """The inverse of :func:`join_frame`; raises ``ValueError`` on a malformed message."""
    cut = data.find(b"\n")
    if cut < 0:
        raise ValueError("cluster message without a routing header")
    return _head_decoder.decode(data[:cut]), data[cut + 1 :]


class Broker(Protocol):
    """The few operations a :class:`~fastwsrpc.cluster.Cluster` needs from its engine.

    One broker object serves one node (one ``Cluster``); :class:`LocalBroker` objects
    sharing a hub stand in for several nodes in one process. Every coroutine raises
    :class:`~fastwsrpc.errors.RpcBrokerUnavailableError` quickly when the engine cannot
    be reached, never hangs on it, and the broker reconnects by itself.
    """

    @property
    def available(self) -> bool:
        """Whether the broker is connected right now (a cheap, local answer)."""

    async def start(
        self, node_id: str, on_request: RequestHandler, on_message: MessageHandler, on_announce: NotifyHandler
    ) -> None:
        """Connect and listen as ``node_id``. Does not raise if the engine is down:
        it keeps trying in the background and calls ``on_announce`` once connected."""

    async def close(self) -> None:
        """Stop listening and disconnect; requests still waiting fail."""

    async def request(self, node_id: str, data: bytes, timeout: Optional[float]) -> bytes:
        """Send ``data`` to ``node_id``'s ``on_request`` and return its reply.

        Raises :class:`RpcNodeGoneError` when no such node listens (at once if the
        engine can tell, else once :meth:`check_peers` finds it gone),
        ``RpcTimeoutError`` after ``timeout`` (``None``: no limit), and
        ``RpcBrokerUnavailableError`` if the connection to the engine drops meanwhile.
        """

    async def send(self, node_id: str, data: bytes) -> bool:
        """One-way message to ``node_id``'s ``on_message``. ``False``: the engine knows
        that nobody listens there; ``True``: delivered, or the engine cannot tell."""

    async def publish(self, data: bytes) -> None:
        """One-way message to every node's ``on_message``, this node's included."""

    async def register(self, client_id: str, node_id: str, ttl: float) -> Optional[str]:
        """Record that ``node_id`` holds ``client_id``; answer the node that held it before."""

    async def unregister(self, client_id: str, node_id: str, groups: Collection[str]) -> None:
        """Forget ``client_id`` and its ``groups``, only if ``node_id`` still holds it."""

    async def locate(self, client_id: str) -> Optional[str]:
        """The node holding ``client_id``, or ``None``."""

    async def join(self, group: str, client_id: str, node_id: str, ttl: float) -> None:
        """Record ``client_id`` (held by ``node_id``) as a member of ``group``."""

    async def leave(self, group: str, client_id: str) -> None:
        """Remove ``client_id`` from ``group``."""

    async def heartbeat(self, node_id: str, clients: Mapping[str, Collection[str]], ttl: float) -> None:
        """Refresh this node's liveness and the presence of all its clients (id -> groups)
        for ``ttl`` more seconds. Also how a node re-announces itself after an outage."""

    async def clients(self, group: Optional[str] = None) -> List[str]:
        """Client ids connected anywhere (members of ``group`` when given)."""

    async def check_peers(self) -> None:
        """Fail requests waiting on nodes that are gone (called every heartbeat)."""


class HistoryBroker(Protocol):
    """What a broker adds to keep topic history (LocalBroker, RedisBroker and NatsBroker do).

    The broker, not the nodes, numbers the publications of a topic, so that every
    node agrees on them: it stores the publication and delivers it to every node
    (as a ``topic`` message whose header carries ``e`` and ``o``) in offset order.
    """

    def enable_history(self, policy: HistoryPolicy) -> None:
        """Keep the last ``policy.size`` publications of every topic, each at most
        ``policy.ttl`` seconds; called once, before or after ``start``."""

    async def publish_history(self, topic: str, body: bytes) -> Position:
        """Store ``body`` (JSON) as ``topic``'s next publication and deliver it to every
        node's ``on_message``; its ``(epoch, offset)``. Raises
        ``RpcBrokerUnavailableError`` when the engine cannot be reached."""

    async def read_history(self, topic: str, since: Optional[Position]) -> HistorySlice:
        """``topic``'s current epoch and newest offset, and the publications after
        ``since`` still held (see :class:`~fastwsrpc.topics.HistorySlice`). A topic
        without history gets an epoch now, so that the position answered is one a
        later loss would change. When it returns, the publications up to ``top``
        should have reached this node's ``on_message`` already (a new subscriber
        starts from the first one it was offered): LocalBroker delivers in the same
        step, NATS waits for its live feed, Redis writes a ``PUBLISH`` to its
        subscribers before it answers a later command."""


class TopicBroker(Protocol):
    """What a broker adds to deliver a topic's publications only to the nodes that watch it
    (LocalBroker, RedisBroker and NatsBroker do).

    Off until :meth:`route_topics` turns it on (the cluster does when its ``per_topic``
    is set): until then a topic message is one broadcast that every node receives.
    """

    def route_topics(self, on: bool) -> None:
        """Publish topic messages (and history publications) to the topic's watchers only
        (``True``), or to every node (``False``). Every node of a cluster should agree:
        a node that broadcasts is heard by all, one that routes is heard by watchers only."""

    async def publish_topic(self, topic: str, data: bytes) -> None:
        """A ``topic`` message (routing header and body) to the ``on_message`` of every
        node that watches ``topic`` (of every node while routing is off)."""

    def watch_topic(self, topic: str) -> Optional[Awaitable[None]]:
        """Receive ``topic``'s messages from now on; an awaitable that completes once the
        engine delivers them here (``None``: nothing to wait for). It never raises, and
        completes within the broker's timeout even if the engine does not answer."""

    def unwatch_topic(self, topic: str) -> None:
        """``topic``'s messages are not needed here any more (the broker may keep them
        coming a little longer, in case the topic is watched again)."""


#: How long a topic's broker subscription outlives its last watcher (a topic watched
#: again within it costs nothing), by default.
TOPIC_LINGER = 2.0
#: Topics a node subscribes to one by one, by default; past it, one wildcard brings the rest
#: (RedisBroker's default: a channel subscription costs about 460 bytes here, so 10,000 about 4.6 MB).
MAX_TOPIC_SUBSCRIPTIONS = 10_000


class TopicInterest:
    """The topics one node watches, and the broker subscriptions that bring them (Redis, NATS).

    One subscription per topic (a channel, a subject), up to ``max_topics``; past that,
    one wildcard subscription brings every topic's messages, and the node keeps the
    ones it watches: at worst what every node received before topics were routed, and
    never more than ``max_topics`` + 1 subscriptions. A topic keeps the source it started
    with while it is watched: a topic of its own while it has one, else the wildcard (new
    topics go to the wildcard while it exists, so that no topic ever changes source while
    it is watched, where a message could be lost or come twice). A message is taken
    from the wildcard only for a topic without a subscription of its own (:meth:`accepts`):
    each comes once even when both bring it.

    A topic's subscription outlives its last watcher by ``linger`` seconds, then goes
    in the next sweep (the oldest lingering one goes at once when a new topic needs its
    place). While the connection is down nothing is subscribed: :meth:`up` subscribes
    every watched topic again.

    ``subscribe(topic)`` (``None``: the wildcard) makes one subscription now and returns
    a future done once the engine confirmed it, or ``None`` if it cannot now;
    ``unsubscribe(topic)`` drops one, without waiting.
    """

    def __init__(
        self,
        subscribe: Callable[[Optional[str]], Optional[asyncio.Future[Any]]],
        unsubscribe: Callable[[Optional[str]], None],
        max_topics: int = MAX_TOPIC_SUBSCRIPTIONS,
        linger: float = TOPIC_LINGER,
        timeout: float = 5.0,
    ) -> None:
        if max_topics < 1:
            raise ValueError(f"max_topics must be >= 1, got {max_topics}")
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self.max_topics = max_topics
        self.linger = linger
        self.timeout = timeout
        #: Topics with a watcher on this node.
        self.watched: Set[str] = set()
        #: Topics with a subscription of their own (made, or on its way).
        self.own: Set[str] = set()
        #: Topics of ``own`` nobody watches any more, in the order they stopped: since when.
        self._lingering: Dict[str, float] = {}
        #: Whether the wildcard subscription exists; the watched topics it serves; when it lost the last.
        self.wildcard = False
        self._wild_topics: Set[str] = set()
        self._wild_idle: Optional[float] = None
        #: Watchers' futures of subscriptions not confirmed yet, by topic (``None``: the wildcard).
        self._waiting: Dict[Optional[str], asyncio.Future[None]] = {}
        self._up = False
        self._sweep: Optional[asyncio.TimerHandle] = None

    def accepts(self, topic: str, wildcard: bool) -> bool:
        """Whether a message of ``topic`` that came by the wildcard (or by its own
        subscription) is one to deliver: each topic is served by one of them."""
        return (topic not in self.own) if wildcard else (topic in self.own)

    def watch(self, topic: str) -> Optional[Awaitable[None]]:
        self.watched.add(topic)
        if not self._up:
            return None  # subscribed by up(); nothing can be promised while the engine is away
        if topic in self.own:
            self._lingering.pop(topic, None)
            return self._waiting.get(topic)
        if not self.wildcard and len(self.own) >= self.max_topics and self._lingering:
            oldest = next(iter(self._lingering))
            self._drop(oldest)
        if self.wildcard or len(self.own) >= self.max_topics:
            self._wild_topics.add(topic)
            self._wild_idle = None
            if self.wildcard:
                return self._waiting.get(None)
            self.wildcard = True
            return self._start(None)
        self.own.add(topic)
        return self._start(topic)

    def unwatch(self, topic: str) -> None:
        if topic not in self.watched:
            return
        self.watched.discard(topic)
        now = asyncio.get_running_loop().time()
        if topic in self.own:
            self._lingering[topic] = now
        elif topic in self._wild_topics:
            self._wild_topics.discard(topic)
            if not self._wild_topics:
                self._wild_idle = now
        else:
            return
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.linger, self._swept)

    def _start(self, key: Optional[str]) -> Optional[asyncio.Future[None]]:
        made = self._subscribe(key)
        if made is None:
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting[key] = waiter

        def settle(_: Any = None) -> None:
            if self._waiting.get(key) is waiter:
                del self._waiting[key]
            if not waiter.done():
                waiter.set_result(None)
            if not made.done():
                _logger.warning(
                    "cluster: no confirmation of the subscription to topic %r within %s s", key, self.timeout
                )
            elif not made.cancelled() and made.exception() is not None:
                _logger.warning("cluster: subscription to topic %r failed: %s", key, made.exception())
            timer.cancel()

        timer = loop.call_later(self.timeout, settle)
        made.add_done_callback(settle)
        return waiter

    def _drop(self, topic: str) -> None:
        self._lingering.pop(topic, None)
        self.own.discard(topic)
        self._waiting.pop(topic, None)
        if self._up:
            self._unsubscribe(topic)

    def _swept(self) -> None:
        self._sweep = None
        now = asyncio.get_running_loop().time()
        horizon = now - self.linger
        for topic, since in list(self._lingering.items()):
            if since > horizon:
                break
            self._drop(topic)
        if self.wildcard and self._wild_idle is not None and self._wild_idle <= horizon:
            self.wildcard = False
            self._wild_idle = None
            self._waiting.pop(None, None)
            if self._up:
                self._unsubscribe(None)
        if self._lingering or (self.wildcard and self._wild_idle is not None):
            self._sweep = asyncio.get_running_loop().call_later(self.linger / 2, self._swept)

    def up(self) -> List[asyncio.Future[None]]:
        """The connection is (back) up with no topic subscribed: subscribe every watched
        topic again; the futures of their confirmations."""
        self._forget()
        self._up = True
        waiters: List[asyncio.Future[None]] = []
        for topic in sorted(self.watched):
            waiter = self.watch(topic)
            if isinstance(waiter, asyncio.Future) and waiter not in waiters:
                waiters.append(waiter)
        return waiters

    def down(self) -> None:
        """The connection is gone, and its subscriptions with it; watchers waiting are let go."""
        self._up = False
        self._forget()

    def _forget(self) -> None:
        self.own.clear()
        self._lingering.clear()
        self.wildcard = False
        self._wild_topics.clear()
        self._wild_idle = None
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_result(None)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


class SessionBroker(Protocol):
    """What a broker adds to keep session records, so that a client may resume its session
    on another node (LocalBroker, RedisBroker and NatsBroker do; see ``fastwsrpc/sessions.py``).

    Per session: its holder (a node id) and the answers of its idempotent calls by key,
    all expiring ``ttl`` seconds after the last write. Raise ``RpcBrokerUnavailableError``
    when the engine cannot be reached.
    """

    async def session_take(self, session_id: str, node_id: str, ttl: float) -> Optional[str]:
        """Make ``node_id`` the holder; the previous holder, ``None`` if the session is unknown."""

    async def session_put(self, session_id: str, answers: Mapping[str, bytes], dropped: List[str], ttl: float) -> None:
        """Record ``answers`` and forget the keys in ``dropped``."""

    async def session_get(self, session_id: str, key: str) -> Optional[bytes]:
        """One recorded answer, ``None`` if there is none."""

    async def session_keys(self, session_id: str) -> List[str]:
        """The keys of the recorded answers."""


class PendingReplies:
    """Requests of this node waiting for their reply, by request number.

    Shared by the Redis and NATS brokers. Each entry remembers the node asked, so
    that a node found dead, or the broker connection lost, fails exactly the
    requests that can no longer be answered: nothing waits forever.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._last = 0
        self._waiting: Dict[int, Tuple[asyncio.Future[Any], str]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, node_id: str) -> Tuple[int, asyncio.Future[Any]]:
        rid = self._last = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (future, node_id)
        return rid, future

    def discard(self, rid: int) -> None:
        self._waiting.pop(rid, None)

    def resolve(self, rid: int, data: bytes) -> None:
        entry = self._waiting.pop(rid, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(data)

    def fail(self, rid: int, exc: BaseException) -> None:
        entry = self._waiting.pop(rid, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(exc)

    def nodes(self) -> Set[str]:
        return {node for _, node in self._waiting.values()}

    @property
    def last_id(self) -> int:
        """The number of the newest request (0: none yet); numbers only grow."""
        return self._last

    def fail_node(self, node_id: str, exc: BaseException, upto: Optional[int] = None) -> None:
        """Fail the requests waiting on ``node_id`` (only those numbered ``upto`` or less, if given)."""
        for rid in [
            rid for rid, (_, node) in self._waiting.items() if node == node_id and (upto is None or rid <= upto)
        ]:
            self.fail(rid, exc)

    def fail_all(self, exc: BaseException) -> None:
        for rid in list(self._waiting):
            self.fail(rid, exc)

    async def wait(self, rid: int, future: asyncio.Future[Any], timeout: Optional[float], node_id: str) -> bytes:
        """Wait for ``rid``'s reply; the timeout is a timer handle, not a task."""
        handle: Optional[asyncio.TimerHandle] = None
        if timeout is not None:
            handle = asyncio.get_running_loop().call_later(
                timeout, self.fail, rid, RpcTimeoutError(f"no reply from node {node_id} within {timeout} s")
            )
        try:
            result: bytes = await future
            return result
        finally:
            self._waiting.pop(rid, None)
            if handle is not None:
                handle.cancel()


def unavailable(what: str, exc: BaseException) -> RpcBrokerUnavailableError:
    """The one way brokers report an unreachable engine (the cause chained by the caller)."""
    return RpcBrokerUnavailableError(f"{what} is unavailable: {exc.__class__.__name__}: {exc}")


def spawn(tasks: Set[asyncio.Task[Any]], coro: Any) -> asyncio.Task[Any]:
    """Start a task kept referenced in ``tasks`` until it ends (the loop holds only weak refs)."""
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def reconnect_retrying(max_wait: float) -> Any:
    """Retrying forever: exponential backoff from 50 ms up to ``max_wait``, plus 0-25% jitter
    (so that nodes that lost the broker together do not return in lockstep); the one builder
    the client uses too (:func:`fastwsrpc.retry.backoff_retrying`).
    """
    from ..retry import backoff_retrying

    def log(state: Any) -> None:
        if _logger.isEnabledFor(logging.DEBUG) and state.outcome is not None:
            _logger.debug("cluster: reconnect attempt %d failed: %r", state.attempt_number, state.outcome.exception())

    return backoff_retrying(
        max_attempts=None,
        min_wait=0.05,
        max_wait=max_wait,
        transient=lambda exc: isinstance(exc, Exception),
        before_sleep=log,
    )


_logger = logging.getLogger("fastwsrpc.cluster")
