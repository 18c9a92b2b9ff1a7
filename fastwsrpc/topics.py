"""Topics: publish/subscribe on top of streams, with history and recovery.

A client subscribes with ``async for event in client.subscribe("prices.btc")``:
on the wire that is the stream method ``$/subscribe`` with params
``{"topics": [...], "on_slow": ..., "since": {...}}``, each item ``{"topic",
"data", "dropped"}`` (plus ``"epoch"`` and ``"offset"`` when the server keeps
history), so a JSON-RPC client of any language can subscribe as it consumes any
stream. The server publishes with ``await endpoint.publish("prices.btc", data)``;
with a cluster broker, a publish reaches the subscribers of every node, each once.

Each subscription has a bounded queue (``queue_size``) between the publisher and
the stream (whose own credits bound what is in flight to the subscriber). A
subscriber that cannot keep up meets a declared policy, never unbounded memory:

* ``"disconnect"`` (the default): the connection is closed with 1008 and a reason
  naming the topic (with history on, the subscriber is first paced by the history:
  it is disconnected only when the history no longer holds what it has not read);
* ``"drop_oldest"``: the oldest waiting event makes room;
* ``"drop_new"``: the new event is dropped.

Every event carries ``dropped``: how many events this subscription lost so far.

History and recovery (``TopicHub(history=N, history_ttl=S)``, the endpoint's
``topic_history`` / ``topic_history_ttl``): every publication gets an ``epoch``
(a random string naming the topic's current history; it changes when that
history is lost) and an ``offset`` (1, 2, 3, ... within the epoch), and the last
``N`` publications of each topic are kept (each at most ``S`` seconds) in memory,
in Redis Streams or in NATS JetStream, depending on the broker. A subscriber
that gives ``since`` (its last ``epoch`` and ``offset`` per topic) receives what
it missed, in order and once, after a notice item saying ``recovered: true``; or
a notice ``recovered: false`` when the history no longer covers the gap: it is
never silently given a hole. ``docs/guide/recovery.md`` is the wire spec.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict, deque
from itertools import islice
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

import msgspec

from .errors import RemoteValueError, RpcBrokerUnavailableError, RpcTimeoutError
from .logger import get_logger
from .protocol import ENCODE_ERRORS, encode
from .transport import CLOSE_POLICY_VIOLATION
from .watchdog import spawn_background

if TYPE_CHECKING:
    from .cluster import Cluster
    from .conversation import Conversation as RpcChannel
    from .streams import StreamLane

logger = get_logger("topics")

SUBSCRIBE = "$/subscribe"
ON_SLOW = ("disconnect", "drop_oldest", "drop_new")
DEFAULT_TOPIC_QUEUE = 256
#: Topics one subscription may name at most (each costs a set entry).
MAX_TOPICS_PER_SUBSCRIPTION = 100
#: The JSON-RPC error a subscription stream ends with when the history it needs
#: cannot be read right now (the broker is unreachable): subscribe again later
#: with the same ``since``. Inside the -32000..-32099 range left to implementations.
HISTORY_UNAVAILABLE = -32002

#: ``reason`` of a notice with ``recovered: false``; stable strings a client may test.
REASON_NEW = "new"  #: no position was given for this topic: the subscription starts now
REASON_NO_HISTORY = "no_history"  #: the server keeps no topic history (``topic_history=0``)
REASON_EPOCH = "epoch"  #: the position's epoch is not the topic's: its history was lost or expired
REASON_GAP = "gap"  #: the history no longer holds every publication after the position
REASON_AHEAD = "ahead"  #: the position is past the newest publication of its epoch

#: A position in a topic's history: ``(epoch, offset)``.
Position = Tuple[str, int]
#: A subscriber's ``since`` for one topic: a position, or ``(None, 0)``, "before its first publication".
Since = Tuple[Optional[str], int]


class TopicEvent(msgspec.Struct, gc=False):
    """One item of a subscription as a subscriber sees it: a publication, or a recovery notice.

    A publication has ``data`` and ``dropped``, and with history on its ``epoch``
    and ``offset`` (keep the last ones: they are the ``since`` to resubscribe
    with). A notice has ``recovered`` set (``is_notice``): ``True`` when every
    publication after the subscriber's ``since`` follows (``missed`` of them, then
    the live ones), ``False`` when they cannot (``reason`` says why: reload the
    state from its source, then carry on from ``epoch`` and ``offset``).
    """

    topic: str
    data: Any = None
    #: Events this subscription has lost so far (``drop_oldest`` / ``drop_new``).
    dropped: int = 0
    #: The topic's history this publication (or notice position) belongs to; ``None`` without history.
    epoch: Optional[str] = None
    #: The publication's number in its epoch (1, 2, ...); in a notice, the position the stream continues from.
    offset: Optional[int] = None
    #: Only in a notice: whether the publications after ``since`` follow (``None`` in a publication).
    recovered: Optional[bool] = None
    #: Only in a notice: how many replayed publications follow it.
    missed: int = 0
    #: Only in a notice with ``recovered`` false: one of the ``REASON_*`` strings.
    reason: Optional[str] = None

    @property
    def is_notice(self) -> bool:
        """Whether this item is a recovery notice rather than a publication."""
        return self.recovered is not None


class HistoryPolicy(NamedTuple):
    """What every topic keeps: the last ``size`` publications, each at most ``ttl`` seconds (``None``: no limit)."""

    size: int
    ttl: Optional[float] = None


class HistorySlice(NamedTuple):
    """What a history store answers for one topic (see :meth:`MemoryHistory.read`).

    ``epoch`` and ``top`` (the newest offset, 0 when none yet) are the topic's
    current position; ``entries`` are the publications still held with an
    offset after the asked position (only when its epoch is the topic's), oldest
    first, each ``(offset, JSON bytes)``. Whether they cover the gap is for the
    reader to check (:func:`covers`): a store just says what it has.
    """

    epoch: str
    top: int
    entries: List[Tuple[int, bytes]]


def new_epoch() -> str:
    """A fresh epoch: 16 random hex characters (a collision is a 1 in 2**64 event)."""
    return secrets.token_hex(8)


def covers(since: Optional[Since], history: HistorySlice) -> Tuple[bool, str, List[Tuple[int, bytes]]]:
    """Whether ``history`` holds every publication after ``since``: ``(recovered, reason, missed)``.

    ``missed`` (when recovered) are exactly the publications ``since.offset + 1``
    to ``history.top``, in order. The check trusts no store: it verifies that the
    offsets are the contiguous run it needs, so a store that lost entries (trimmed
    by size or age, evicted) shows as a gap, never as a hole.
    """
    if since is None:
        return False, REASON_NEW, []
    epoch, offset = since
    if epoch is None:
        epoch = history.epoch  # "before the first publication": whatever epoch exists began after it (see _read)
    if epoch != history.epoch:
        return False, REASON_EPOCH, []
    if offset > history.top:
        return False, REASON_AHEAD, []
    missed = [entry for entry in history.entries if offset < entry[0] <= history.top]
    if len(missed) != history.top - offset or (missed and missed[0][0] != offset + 1):
        return False, REASON_GAP, []
    return True, "", missed


class _Stream:
    """One topic's history in memory: its epoch, its newest offset, its last entries."""

    __slots__ = ("entries", "epoch", "expires", "top")

    def __init__(self, epoch: str, size: int) -> None:
        self.epoch = epoch
        self.top = 0
        #: ``(offset, body, published_at)``; ``published_at`` is 0.0 without a TTL.
        self.entries: Deque[Tuple[int, bytes, float]] = deque(maxlen=size)
        self.expires = 0.0


class MemoryHistory:
    """Topic histories in this process's memory: LocalBroker's (one per :class:`LocalHub`,
    shared by its nodes) and that of a :class:`TopicHub` used without a cluster.

    Bounded: at most ``size`` entries per topic. With a TTL, a topic's whole
    history (epoch included) is dropped ``ttl`` seconds after its last
    publication, so idle topics cost nothing; the topics are kept in the order
    they expire, so that sweep is a look at the oldest one on each call (no task).
    Without a TTL nothing ever expires, so every topic shares this store's epoch
    (a fresh one per process: a restart is the only way to lose history) and a
    topic costs memory only once published, not when merely subscribed to.
    """

    def __init__(self) -> None:
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        #: The epoch of every topic while nothing expires (no TTL).
        self.epoch = new_epoch()

    def __len__(self) -> int:
        """Topics with a history here."""
        return len(self._streams)

    def _sweep(self, now: float) -> None:
        streams = self._streams
        while streams:
            stream = streams[next(iter(streams))]
            if stream.expires == 0.0 or stream.expires > now:
                return
            streams.popitem(last=False)

    def _create(self, topic: str, policy: HistoryPolicy, now: float) -> _Stream:
        ttl = policy.ttl
        stream = _Stream(self.epoch if ttl is None else new_epoch(), policy.size)
        self._streams[topic] = stream
        if ttl is not None:
            stream.expires = now + ttl
        return stream

    @staticmethod
    def _expire_entries(stream: _Stream, ttl: Optional[float], now: float) -> None:
        if ttl is not None:
            entries = stream.entries
            limit = now - ttl
            while entries and entries[0][2] <= limit:
                entries.popleft()

    def append(self, topic: str, body: bytes, policy: HistoryPolicy, now: float) -> Position:
        """Keep ``body`` (the publication's JSON) as ``topic``'s next offset; its ``(epoch, offset)``."""
        self._sweep(now)
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._create(topic, policy, now)
        ttl = policy.ttl
        stream.top += 1
        stream.entries.append((stream.top, body, now if ttl is not None else 0.0))
        if ttl is not None:
            self._expire_entries(stream, ttl, now)
            stream.expires = now + ttl
            self._streams.move_to_end(topic)
        return stream.epoch, stream.top

    def read(self, topic: str, since: Optional[Position], policy: HistoryPolicy, now: float) -> HistorySlice:
        """``topic``'s position and the entries after ``since`` still held (see :class:`HistorySlice`).

        A topic without history gets one now when there is a TTL (a fresh epoch,
        offset 0): a subscriber's position must name an epoch that a later loss
        would change. Without a TTL the store's own epoch serves, allocating nothing.
        """
        self._sweep(now)
        stream = self._streams.get(topic)
        if stream is None:
            if policy.ttl is None:
                return HistorySlice(self.epoch, 0, [])
            stream = self._create(topic, policy, now)
        self._expire_entries(stream, policy.ttl, now)
        entries: List[Tuple[int, bytes]] = []
        if since is not None and since[0] == stream.epoch and since[1] < stream.top:
            held = stream.entries
            want = stream.top - since[1]
            start = max(0, len(held) - want)
            entries = [(offset, body) for offset, body, _ in islice(held, start, None)]
        return HistorySlice(stream.epoch, stream.top, entries)


#: Shared by subscriptions until their stream's iterator gives them its own.
_NO_POSITIONS: Dict[str, Position] = {}

#: A queued publication: ``(topic, data, epoch, offset)``; epoch and offset are ``None`` without history.
_Entry = Tuple[str, Any, Optional[str], Optional[int]]


class _Subscription:
    __slots__ = (
        "behind",
        "channel",
        "dropped",
        "dropped_at",
        "first",
        "kicked",
        "lane",
        "on_slow",
        "positions",
        "queue",
        "queue_size",
        "send_nowait",
        "waiter",
    )

    def __init__(self, channel: RpcChannel, on_slow: str, queue_size: int) -> None:
        self.channel = channel
        self.on_slow = on_slow
        self.queue_size = queue_size
        self.queue: Deque[_Entry] = deque()
        self.dropped = 0
        self.kicked = False
        self.waiter: Optional[asyncio.Future[None]] = None
        #: Topics whose newer publications were left in the history for lack of room
        #: (``disconnect`` policy): the position just before the first one left there.
        self.behind: Dict[str, Position] = {}
        #: Until the stream's start has read the history: the first publication offered per topic.
        self.first: Optional[Dict[str, Position]] = None
        #: Per topic: the newest publication dropped by the policy, so that the gap it
        #: leaves is not taken for one the broker left (and refilled from the history).
        self.dropped_at: Dict[str, Position] = {}
        #: The stream's side door and the transport's write-if-no-wait, once the stream is answered
        #: (see :meth:`direct`); None on a transport that always waits, or for a durable stream.
        self.lane: Optional[StreamLane] = None
        self.send_nowait: Optional[Callable[[bytes], bool]] = None
        #: The stream's positions per topic (its :class:`_Events`'), kept by the direct path too.
        self.positions: Dict[str, Position] = _NO_POSITIONS

    def direct(self, parts: Tuple[bytes, ...], topic: str, epoch: Optional[str], offset: Optional[int]) -> bool:
        """Write a publication's frame now, past the queue and the stream's task; False if it must queue.

        Only while the stream's task waits for the queue (nothing queued, held back
        or being sent: order is kept), the subscriber has a credit to spare and its
        transport takes the frame without waiting; with history, only the next
        offset of the stream's position (anything else is the task's to sort out).
        """
        lane = self.lane
        if lane is None or self.kicked or self.first is not None:
            return False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return False
        if epoch is not None:
            position = self.positions.get(topic)
            if offset is None or (position is not None and (position[0] != epoch or position[1] + 1 != offset)):
                return False
        if not lane.take():
            return False
        dropped = self.dropped
        frame = b"".join((lane.head, parts[0], b"0" if dropped == 0 else str(dropped).encode(), parts[1]))
        assert self.send_nowait is not None
        if not self.send_nowait(frame):
            lane.give_back()
            return False
        if epoch is not None:
            assert offset is not None
            self.positions[topic] = (epoch, offset)
        return True

    def offer(self, topic: str, data: Any, epoch: Optional[str] = None, offset: Optional[int] = None) -> None:
        if self.kicked:
            return
        if self.first is not None and epoch is not None and offset is not None:
            self.first.setdefault(topic, (epoch, offset))
        queue = self.queue
        if len(queue) >= self.queue_size:
            if self.on_slow == "drop_oldest":
                victim = queue.popleft()
                self.dropped += 1
                if victim[2] is not None and victim[3] is not None:
                    self.dropped_at[victim[0]] = (victim[2], victim[3])
            elif self.on_slow == "drop_new":
                self.dropped += 1
                if epoch is not None and offset is not None:
                    self.dropped_at[topic] = (epoch, offset)
                return
            elif epoch is not None and offset is not None:
                # The history holds it: the stream fetches it from there once the
                # subscriber has read what is queued (and only then disconnects it,
                # if the history no longer reaches back that far).
                self.behind.setdefault(topic, (epoch, offset - 1))
                return
            else:
                self.kick(f"subscriber too slow on topic {topic!r}")
                return
        queue.append((topic, data, epoch, offset))
        self._wake()

    def kick(self, reason: str) -> None:
        """Close the subscriber's connection (1008): it cannot get what it subscribed to."""
        if self.kicked:
            return
        self.kicked = True
        logger.warning("channel %s (peer %s): %s; disconnecting", self.channel.id, self.channel.socket.peer, reason)
        spawn_background(asyncio.get_running_loop(), self.channel.close(CLOSE_POLICY_VIOLATION, reason))
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TopicHub:
    """The subscriptions of one process, by topic; the endpoint has one (``endpoint.topics``).

    ``history`` (default 0: off) keeps the last that many publications of every
    topic, each at most ``history_ttl`` seconds (``None``: until pushed out), so
    that a subscriber coming back with ``since`` gets what it missed. Where they
    are kept is the cluster broker's business once :meth:`attach` ed (in memory,
    Redis Streams, NATS JetStream); a hub used alone keeps them in memory.
    """

    def __init__(
        self,
        queue_size: int = DEFAULT_TOPIC_QUEUE,
        on_slow: str = "disconnect",
        history: int = 0,
        history_ttl: Optional[float] = None,
    ) -> None:
        if on_slow not in ON_SLOW:
            raise ValueError(f"on_slow must be one of {ON_SLOW}, got {on_slow!r}")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(f"history must be an int >= 0, got {history!r}")
        if history_ttl is not None and not history_ttl > 0:
            raise ValueError(f"history_ttl must be > 0 seconds or None, got {history_ttl!r}")
        self.queue_size = queue_size
        self.on_slow = on_slow
        self.history = history
        self.history_ttl = None if history_ttl is None else float(history_ttl)
        #: ``None`` when history is off.
        self.history_policy: Optional[HistoryPolicy] = HistoryPolicy(history, self.history_ttl) if history else None
        self._topics: Dict[str, Set[_Subscription]] = {}
        self._cluster: Optional[Cluster] = None
        #: Topics whose broker delivery this node asked for and the broker has not confirmed yet:
        #: every new subscription to one of them waits for it before its stream is answered.
        self._watching: Dict[str, asyncio.Future[None]] = {}
        self._memory: Optional[MemoryHistory] = MemoryHistory() if history else None

    def attach(self, cluster: Cluster) -> None:
        """Take this node's topic messages from ``cluster`` and keep history in its broker.

        The endpoint calls it once, at construction. Raises ``TypeError`` when
        history is on and the broker cannot keep any.
        """
        if self.history_policy is not None:
            cluster.enable_topic_history(self.history_policy)
        cluster.on_topic = self.publish_local
        self._cluster = cluster
        self._memory = None
        for topic in self._topics:
            cluster.watch_topic(topic)
        # This hub tells the cluster which topics have subscribers here: a publication
        # then reaches only the nodes that have some (one broker message per such node).
        cluster.per_topic = True

    def subscriber_count(self, topic: Optional[str] = None) -> int:
        """Subscriptions to ``topic`` (or to any topic) in this process."""
        if topic is not None:
            return len(self._topics.get(topic, ()))
        return len({sub for subs in self._topics.values() for sub in subs})

    def topics(self) -> List[str]:
        """Topics with at least one subscriber here."""
        return list(self._topics)

    async def publish(self, topic: str, data: Any = None) -> Optional[Position]:
        """Publish ``data`` on ``topic``: through the cluster when attached, else here.

        Returns the publication's ``(epoch, offset)`` when history is on, else ``None``.
        """
        if self._cluster is not None:
            return await self._cluster.publish_topic(topic, data)
        policy, memory = self.history_policy, self._memory
        if policy is None or memory is None:
            self.publish_local(topic, data)
            return None
        position = memory.append(topic, msgspec.json.encode(data), policy, asyncio.get_running_loop().time())
        self.publish_local(topic, data, *position)
        return position

    async def read_history(self, topic: str, since: Optional[Position]) -> HistorySlice:
        """``topic``'s position and the publications after ``since`` the history still holds."""
        policy = self.history_policy
        if policy is None:
            raise RuntimeError("this TopicHub keeps no history (history=0)")
        if self._cluster is not None:
            return await self._cluster.read_topic_history(topic, since)
        assert self._memory is not None
        return self._memory.read(topic, since, policy, asyncio.get_running_loop().time())

    def publish_local(self, topic: str, data: Any, epoch: Optional[str] = None, offset: Optional[int] = None) -> int:
        """Offer ``data`` to this process's subscribers of ``topic``; how many there were.

        ``epoch`` and ``offset`` are the publication's place in the topic's
        history (the cluster passes them); without them it is not in any
        history and cannot be recovered.
        """
        subs = self._topics.get(topic)
        if not subs:
            return 0
        parts: Optional[Tuple[bytes, ...]] = None
        for sub in list(subs):
            if sub.lane is not None:
                if parts is None:
                    parts = _item_parts(topic, data, epoch, offset)
                if parts and sub.direct(parts, topic, epoch, offset):
                    continue
            sub.offer(topic, data, epoch, offset)
        return len(subs)

    def subscribe(
        self, channel: RpcChannel, topics: Iterable[str], on_slow: Optional[str] = None, since: Any = None
    ) -> _Events:
        """The producer side of a ``$/subscribe`` stream (run by the channel, paced by credits).

        The subscription is registered here, before the stream's id is
        answered, so that nothing published after the subscriber's ``open()``
        returns can be missed. ``since`` (``{topic: {"epoch": e, "offset": n}}``,
        possibly empty) asks for recovery: the stream then starts with a notice
        per topic, then what was missed (see :mod:`fastwsrpc.topics`).
        """
        names = list(topics) if not isinstance(topics, str) else [topics]
        if not names or len(names) > MAX_TOPICS_PER_SUBSCRIPTION or not all(isinstance(t, str) for t in names):
            raise RemoteValueError(
                f"Invalid params: topics must be 1 to {MAX_TOPICS_PER_SUBSCRIPTION} strings", code=-32602
            )
        policy = on_slow or self.on_slow
        if policy not in ON_SLOW:
            raise RemoteValueError(f"Invalid params: on_slow must be one of {ON_SLOW}", code=-32602)
        positions = _parse_since(since, names)
        sub = _Subscription(channel, policy, self.queue_size)
        if positions is not None and self.history_policy is not None:
            sub.first = {}
        waits: List[asyncio.Future[None]] = []
        for name in names:
            subs = self._topics.get(name)
            if subs is None:
                subs = self._topics[name] = set()
                self._watch(name)
            subs.add(sub)
            waiting = self._watching.get(name)
            if waiting is not None:
                waits.append(waiting)
        return _Events(self, sub, names, positions, waits)

    def _watch(self, topic: str) -> None:
        """``topic`` has its first subscriber here: the cluster has the broker deliver it (per-topic routing)."""
        cluster = self._cluster
        if cluster is None:
            return
        waiter = cluster.watch_topic(topic)
        if waiter is None:
            return
        future = asyncio.ensure_future(waiter)
        if future.done():
            return
        self._watching[topic] = future

        def confirmed(done: asyncio.Future[None]) -> None:
            if self._watching.get(topic) is done:
                del self._watching[topic]

        future.add_done_callback(confirmed)

    def _forget(self, sub: _Subscription, names: List[str]) -> None:
        for name in names:
            subs = self._topics.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._topics[name]
                    self._watching.pop(name, None)
                    if self._cluster is not None:
                        self._cluster.unwatch_topic(name)


def _item_parts(topic: str, data: Any, epoch: Optional[str], offset: Optional[int]) -> Tuple[bytes, ...]:
    """A publication's item JSON, encoded once for every subscriber, around its ``dropped`` count.

    ``()`` when ``data`` is not JSON: each subscription's task then reports it as
    it would any item it cannot encode.
    """
    try:
        body = encode(data)
    except ENCODE_ERRORS:
        return ()
    head = b"".join((b'{"topic":', encode(topic), b',"data":', body, b',"dropped":'))
    if epoch is None or offset is None:
        return head, b"}}}"
    return head, b"".join((b',"epoch":', encode(epoch), b',"offset":', str(offset).encode(), b"}}}"))


def _parse_since(since: Any, names: List[str]) -> Optional[Dict[str, Since]]:
    """``since`` as ``{topic: (epoch, offset)}``; -32602 for anything else than the spec's shape."""
    if since is None:
        return None
    if not isinstance(since, Mapping):
        raise RemoteValueError('Invalid params: since must be {topic: {"epoch": str, "offset": int}}', code=-32602)
    known = set(names)
    positions: Dict[str, Since] = {}
    for topic, where in since.items():
        if topic not in known:
            raise RemoteValueError(f"Invalid params: since names {topic!r}, which is not subscribed", code=-32602)
        epoch = where.get("epoch") if isinstance(where, Mapping) else None
        offset = where.get("offset") if isinstance(where, Mapping) else None
        if epoch is None and offset == 0:
            positions[topic] = (None, 0)  # before the topic's first publication (it had none then)
            continue
        if (
            not isinstance(epoch, str)
            or isinstance(offset, bool)
            or not isinstance(offset, int)
            or offset < 0
            or len(epoch) > 256
        ):
            raise RemoteValueError(
                f'Invalid params: since[{topic!r}] must be {{"epoch": str, "offset": int >= 0}}', code=-32602
            )
        positions[topic] = (epoch, offset)
    return positions


class _Events:
    """The items of one subscription, as the async iterator a stream producer drives.

    With history, it keeps each topic's position (the last publication given to
    the subscriber) and repairs what the subscriber would otherwise miss from
    the history: the gap before a ``since`` (at the start), a gap in what reached
    this node (a broker that dropped messages), and publications left in the
    history because the queue was full. A publication at or before the position
    (already replayed) is skipped, so nothing comes twice.
    """

    __slots__ = ("_closed", "_hub", "_names", "_positions", "_ready", "_since", "_started", "_sub", "_waits")

    def __init__(
        self,
        hub: TopicHub,
        sub: _Subscription,
        names: List[str],
        since: Optional[Dict[str, Since]],
        waits: Optional[List[asyncio.Future[None]]] = None,
    ) -> None:
        self._hub = hub
        #: The broker's confirmations this subscription's topics still wait for (see :meth:`ready`).
        self._waits = waits or None
        self._sub = sub
        self._names = names
        self._closed = False
        #: ``None``: the subscriber did not ask for recovery (it is sent no notice).
        self._since = since
        self._started = False
        #: Per topic with history: the position of the last publication given (or skipped past).
        self._positions: Dict[str, Position] = {}
        #: Items to give before the queue's: notices (dicts) and replays ``(topic, epoch, offset, body)``.
        self._ready: Deque[Any] = deque()
        sub.positions = self._positions

    async def before_answer(self) -> None:
        """Wait until the broker delivers every topic here (per-topic routing): the stream is answered after,
        so that nothing published once the subscriber's ``open()`` returns can be missed."""
        waits, self._waits = self._waits, None
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits), return_exceptions=True)

    def bind_lane(self, lane: StreamLane) -> None:
        """The stream is answered: publications may now be written past its task (see ``_Subscription.direct``)."""
        send_nowait = getattr(self._sub.channel.socket, "send_nowait", None)
        if send_nowait is not None:
            self._sub.send_nowait = send_nowait
            self._sub.lane = lane

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Dict[str, Any]:
        sub = self._sub
        if not self._started:
            self._started = True
            if self._since is not None:
                await self._recover()
        ready = self._ready
        while True:
            if ready:
                return self._replayed(ready.popleft())
            if sub.behind and not sub.queue and not sub.kicked and not self._closed:
                topic, where = next(iter(sub.behind.items()))
                await self._catch_up(topic, self._positions.get(topic, where))
                continue
            while not sub.queue and not sub.behind and not sub.kicked and not self._closed:
                sub.waiter = asyncio.get_running_loop().create_future()
                try:
                    await sub.waiter
                finally:
                    sub.waiter = None
            if sub.kicked or self._closed:
                await self.aclose()
                raise StopAsyncIteration
            if not sub.queue:
                continue
            topic, data, epoch, offset = sub.queue.popleft()
            if epoch is None or offset is None:
                return {"topic": topic, "data": data, "dropped": sub.dropped}
            position = self._positions.get(topic)
            if position is not None:
                if epoch == position[0] and offset <= position[1]:
                    continue  # given already (replayed from the history)
                if epoch != position[0] or (offset > position[1] + 1 and not self._dropped_since(topic, position)):
                    # Publications between the position and this one never reached
                    # us (or the history was lost): this one is in the history too.
                    await self._catch_up(topic, position)
                    continue
            self._positions[topic] = (epoch, offset)
            return {"topic": topic, "data": data, "dropped": sub.dropped, "epoch": epoch, "offset": offset}

    def _dropped_since(self, topic: str, position: Position) -> bool:
        """Whether the policy dropped a publication of ``topic`` after ``position`` (the gap is its own)."""
        dropped = self._sub.dropped_at.get(topic)
        return dropped is not None and dropped[0] == position[0] and dropped[1] > position[1]

    def _replayed(self, item: Any) -> Dict[str, Any]:
        if isinstance(item, dict):
            return item
        topic, epoch, offset, body = item
        return {
            "topic": topic,
            "data": msgspec.json.decode(body),
            "dropped": self._sub.dropped,
            "epoch": epoch,
            "offset": offset,
        }

    async def _read_for(self, topic: str, since: Optional[Since]) -> Optional[HistorySlice]:
        """The history for a recovery; None for a new subscription whose position cannot be read now.

        A subscriber that gave a position must not be given a hole: for it the
        failure stands (-32002: subscribe again). One that gave none loses
        nothing by starting with the next publication.
        """
        try:
            return await self._read(topic, since)
        except RemoteValueError as exc:
            if since is not None or exc.code != HISTORY_UNAVAILABLE:
                raise
            return None

    async def _read(self, topic: str, since: Optional[Since]) -> HistorySlice:
        """The history after ``since``; ``(None, 0)`` reads from the first publication of today's epoch."""
        position: Optional[Position] = None
        if since is not None:
            if since[0] is None:
                top = await self._read(topic, None)
                if top.epoch is None or top.top == 0:
                    return top
                position = (top.epoch, 0)  # the topic had no publication when the subscriber started
            else:
                position = (since[0], since[1])
        try:
            return await self._hub.read_history(topic, position)
        except (RpcBrokerUnavailableError, RpcTimeoutError) as exc:
            data = {"topic": topic, "epoch": since[0], "offset": since[1]} if since is not None else {"topic": topic}
            raise RemoteValueError(
                f"the history of topic {topic!r} cannot be read now ({exc}); subscribe again later",
                code=HISTORY_UNAVAILABLE,
                data=data,
            ) from None

    async def _recover(self) -> None:
        """The start of a subscription that asked for recovery: a notice per topic, then the replays.

        A topic recovered continues right after its ``since``. Any other starts
        from the first publication offered to this subscription (the history read
        returns only once everything up to its top has reached this node, so that
        one is known by then), or from the top if none came: what a subscriber
        without history would have got, and never less.
        """
        assert self._since is not None
        since = self._since
        sub = self._sub
        if self._hub.history_policy is None:
            for topic in self._names:
                self._ready.append(_notice(topic, False, None, None, 0, REASON_NO_HISTORY))
            return
        slices = await asyncio.gather(*(self._read_for(topic, since.get(topic)) for topic in self._names))
        first, sub.first = sub.first or {}, None
        replays: List[Any] = []
        for topic, history in zip(self._names, slices):
            if history is None:
                # A new subscription whose position could not be read (the broker is
                # busy or away): it starts with the first publication that comes, as
                # one without history would; the notice has no position to resume from.
                self._ready.append(_notice(topic, False, None, None, 0, REASON_NEW))
                self._positions.pop(topic, None)
                continue
            recovered, reason, missed = covers(since.get(topic), history)
            position = (history.epoch, history.top)
            seen = first.get(topic)
            if not recovered and seen is not None and seen[0] == history.epoch and seen[1] <= history.top:
                position = (history.epoch, seen[1] - 1)
            self._ready.append(_notice(topic, recovered, position[0], position[1], len(missed), reason))
            replays.extend((topic, history.epoch, offset, body) for offset, body in missed)
            if reason == REASON_NEW and seen is None:
                # A new subscription that no publication reached yet: the read does not
                # prove that every publication up to its top has reached this node (a
                # broker's push can come after the read's answer, on Redis), so the
                # first one that comes sets the position, rather than be taken for
                # one given already. At worst it is one published just before.
                self._positions.pop(topic, None)
            else:
                self._positions[topic] = position
        self._ready.extend(replays)

    async def _catch_up(self, topic: str, since: Position) -> None:
        """Replay ``topic``'s publications after ``since`` from the history, or tell the subscriber they are lost."""
        sub = self._sub
        sub.behind.pop(topic, None)  # what is left there from now on comes after the position read below
        history = await self._read(topic, since)
        recovered, reason, missed = covers(since, history)
        self._positions[topic] = (history.epoch, history.top)
        if recovered:
            self._ready.extend((topic, history.epoch, offset, body) for offset, body in missed)
            return
        logger.info(
            "channel %s: topic %r: publications after %s are lost (%s); now at %s:%d",
            sub.channel.id,
            topic,
            since,
            reason,
            history.epoch,
            history.top,
        )
        if self._since is not None:
            self._ready.append(_notice(topic, False, history.epoch, history.top, 0, reason))
        elif sub.on_slow == "disconnect":
            sub.kick(f"subscriber lost publications on topic {topic!r} ({reason})")
        else:
            lost = history.top - since[1] if reason == REASON_GAP else 1
            sub.dropped += max(1, lost)

    async def aclose(self) -> None:
        """End the subscription (also when it never started): it leaves every topic."""
        if not self._closed:
            self._closed = True
            self._sub.lane = None
            self._ready.clear()
            self._hub._forget(self._sub, self._names)


def _notice(
    topic: str, recovered: bool, epoch: Optional[str], offset: Optional[int], missed: int, reason: str
) -> Dict[str, Any]:
    """The item that tells a subscriber whether what follows continues from its ``since``."""
    item: Dict[str, Any] = {"topic": topic, "recovered": recovered, "epoch": epoch, "offset": offset, "missed": missed}
    if not recovered:
        item["reason"] = reason
    return item
