"""NatsBroker: the cluster on NATS (nats-py; ``pip install fastwsrpc[nats]``).

Subjects, under a namespace (default ``fastwsrpc``):

* ``{ns}.node.{node_id}``: one subject per node. A routed call is a NATS request on it
  (a message with a reply subject, ``{ns}.reply.{node_id}.{n}``, which the caller's
  one wildcard subscription receives); a message without reply subject is one-way.
  When nobody is subscribed, the server itself answers a request with the status
  "503 no responders": a call to a dead node fails at once.
* ``{ns}.all``: broadcasts (and topic publications, unless topics are routed).
* ``{ns}.t.<topic>``: a topic's publications, with topics routed (``Cluster.per_topic``),
  the topic as in the history stream below: a node subscribes to the topics it watches,
  one subject each (up to ``max_topic_subscriptions``, then ``{ns}.t.>`` brings the
  rest; see :class:`~fastwsrpc.cluster.base.TopicInterest`), so that a publication
  reaches only the nodes with a subscriber. A subscription counts as made once a
  message this node sends itself after it comes back (:meth:`NatsBroker._barrier`).
* ``{ns}.presence``: who is connected where, as soft state. Plain core NATS keeps
  no data, and we do not require JetStream, so each node publishes its changes (a
  client added, removed, joined a group) as they happen and its full state every
  heartbeat; every node keeps the resulting view, each entry with its own expiry.
  A dead node stops refreshing its entries and they expire within the TTL. A node
  that connects (or reconnects) asks the others to publish their state at once.
  Lookups are then local: no round trip before a routed call.
* ``{ns}.sync`` and ``{ns}.sync.{node_id}``: how a node learns the cluster before it
  is ready (``start`` returns only then). Once subscribed, it sends a request on
  ``{ns}.sync``; every peer answers on the node's reply subject with its own clients
  (``state`` messages) then ``ready``, naming the nodes it knows are alive. The node
  waits until each node named has answered, for at most ``sync_timeout``: a named
  node that is slow to answer is asked again on its own subject, where the server's
  "no responders" says at once that it is gone (it crashed and its presence has not
  expired yet). It subscribes to ``{ns}.sync`` only after sending its own request, so
  that with no peer at all the server answers "no responders" and the start does
  not wait.

The cluster's own traffic (requests, answers, one-way messages, broadcasts, the sync
requests and their answers, routed topics) goes over a second connection that the
broker drives by hand (:mod:`~fastwsrpc.cluster.natsproto`): a message is parsed and
handed to its handler in the protocol's ``data_received``, a ``PUB`` written from
the step that makes it. nats-py's connection keeps presence, JetStream and the
session records. A request and its "no responders" must share a connection (the
server answers 503 on the requester's), so do the sync requests and the subscription
made after them. With options that connection does not support (see
:func:`~fastwsrpc.cluster.natsproto.supported`), or ``own_connection=False``, that
traffic stays on nats-py's connection, read with no task per message: nats-py hands
each message to our handler as it parses it (see :class:`_Deliver`).

When the connection drops, every request waiting for a reply fails with
``RpcBrokerUnavailableError`` (its reply could be lost); the broker reconnects with
tenacity (exponential backoff with jitter), subscribes again and the cluster
re-announces its clients.

Topic history (only when enabled; it needs JetStream, ``nats-server -js``): one
stream ``{ns}_topics`` on the subjects ``{ns}.topic.>``, one subject per topic
(``{ns}.topic.<topic>`` when the topic is made of ``[A-Za-z0-9_-]`` tokens joined by
dots, else ``{ns}.topic.~.<base64url>``), ``max_msgs_per_subject`` = N and
``max_age`` = the TTL. Each message carries its topic's epoch and offset in the
headers ``Fastwsrpc-Epoch`` and ``Fastwsrpc-Offset``. JetStream numbers messages per
stream, not per subject, so the offset is assigned by the publisher with optimistic
concurrency: it publishes offset n+1 with ``Nats-Expected-Last-Subject-Sequence`` set
to the stream sequence of offset n, and if another node got there first, the server
refuses it and the publisher reads the subject's last message and tries again. The
epoch lives in those headers too: a topic whose messages all expired (or a stream that
was lost) starts a new epoch; a read of a topic with no message stores an epoch
marker (offset 0, no data) so that the position answered is a real one.

Every node follows the whole stream with one ordered push consumer, which delivers a
topic's publications in stream order (so in offset order); after a reconnect it
resumes after the last stream sequence it saw, so an outage loses no publication.
With topics routed, no node follows the stream: the publisher sends each publication
it stored to the topic's subject too (in its lock on the topic, so in order from one
node; two nodes' can cross, and a subscriber then fills the gap from the history).
A node that broadcasts (topics not routed) stores to the stream only: a routed node
hears its publications when a routed one of the same topic shows the gap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import re
from collections import OrderedDict
from typing import Any, AsyncIterator, Awaitable, Callable, Collection, Dict, List, Mapping, Optional, Set, Tuple

import msgspec

from ..errors import RpcBrokerUnavailableError, RpcMessageTooLargeError, RpcTimeoutError
from ..topics import HistoryPolicy, HistorySlice, Position, new_epoch
from . import natsproto
from .base import (
    TOPIC_LINGER,
    Head,
    MessageHandler,
    NotifyHandler,
    PendingReplies,
    RequestHandler,
    RpcNodeGoneError,
    TopicInterest,
    join_frame,
    reconnect_retrying,
    spawn,
    unavailable,
)

logger = logging.getLogger("fastwsrpc.cluster")

__all__ = ["NatsBroker"]

#: Full-state announcements are split into messages of about this size (NATS'
#: default max_payload is 1 MiB).
_STATE_CHUNK_BYTES = 256 * 1024


#: Headers of a history message: its topic's epoch and its offset (0: an epoch marker).
_EPOCH = "Fastwsrpc-Epoch"
_OFFSET = "Fastwsrpc-Offset"
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
#: The session records' max age when a node reads them before any session was opened (the bucket is made by
#: the first node that opens one, with its ``session_ttl``).
DEFAULT_RECORD_TTL = 120.0
#: JetStream's error code for a failed Nats-Expected-Last-Subject-Sequence.
_WRONG_LAST_SEQUENCE = 10071
#: JetStream's error code for a stream that does not exist.
_STREAM_NOT_FOUND = 10059
#: Attempts at an offset before a publication gives up (each lost to another node's publication).
_CAS_ATTEMPTS = 200
#: Topics whose last stream sequence a node remembers (an optimisation: the server checks anyway).
_TOPS_CACHE = 10_000
#: Topics a node subscribes to one by one, by default: each nats-py subscription costs about
#: 5 kB here (its unused message queue, mostly), so 1,000 topics about 5 MB; past it, one
#: wildcard brings the rest (RedisBroker's subscriptions cost a tenth of that: 10,000).
NATS_TOPIC_SUBSCRIPTIONS = 1_000
#: Topics that map to a subject as they are (dot-separated tokens of these characters).
_PLAIN_TOPIC = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class _TopicLocks:
    """One lock per topic while it is held or awaited, then forgotten: a node numbers
    its own publications of a topic one at a time (they would only race each other)."""

    def __init__(self) -> None:
        self._locks: Dict[str, List[Any]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, topic: str) -> AsyncIterator[None]:
        entry = self._locks.get(topic)
        if entry is None:
            entry = self._locks[topic] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[topic]


class _Gossip(msgspec.Struct, omit_defaults=True, gc=False):
    """A presence message: ``op`` is state, add, del, join, leave, sync, ready or bye; ``n`` the node.

    ``k``, in ``ready`` (the last answer to a node's sync request): the nodes the
    answering node knows are alive, itself included.
    """

    op: str
    n: str
    ttl: float = 0.0
    c: str = ""
    g: str = ""
    cs: Optional[Dict[str, List[str]]] = None
    k: Optional[List[str]] = None


_gossip_encoder = msgspec.json.Encoder()
_gossip_decoder = msgspec.json.Decoder(_Gossip)


class _Sync:
    """A node's sync request in progress: who answered, who is expected, who is gone."""

    def __init__(self, expected: Set[str]) -> None:
        self.expected = expected
        self.answered: Set[str] = set()
        self.gone: Set[str] = set()
        self.asked: Set[str] = set()
        #: The server said nobody listens on ``{ns}.sync``: no peer is up.
        self.nobody = False
        self.changed = asyncio.Event()

    def missing(self, me: str) -> Set[str]:
        return self.expected - self.answered - self.gone - {me}

    def done(self, me: str) -> bool:
        return (self.nobody or bool(self.answered)) and not self.missing(me)


#: A node named by a peer but silent this long after the last answer is asked again
#: on its own subject (where "no responders" says at once that it is gone).
_SYNC_GRACE = 0.1


class _Entry:
    __slots__ = ("groups", "node", "until")

    def __init__(self, node: str, until: float, groups: Set[str]) -> None:
        self.node = node
        self.until = until
        self.groups = groups


#: A hot-path message handler: ``(subject, reply, data, status)``.
Handler = Callable[[str, str, bytes, int], None]
#: Subjects this node keeps encoded (cleared when full).
_SUBJECT_CACHE = 10_000


def _adapt(handler: Handler) -> Callable[[Any], None]:
    """A hot-path handler fed by nats-py (its messages; the status from their headers)."""

    def deliver(msg: Any) -> None:
        headers = msg.headers
        status = headers.get("Status", "") if headers else ""
        handler(msg.subject, msg.reply, msg.data, int(status) if status.isdigit() else 0)

    return deliver


class _TopicSub:
    """A topic's subscription while nats-py makes it (``dropped``: unsubscribe it once made)."""

    __slots__ = ("dropped", "sub")

    def __init__(self) -> None:
        self.sub: Any = None
        self.dropped = False


def _subject_tokens(topic: str) -> str:
    """A topic as subject tokens: as it is when made of ``[A-Za-z0-9_-]`` tokens joined by
    dots, else ``~.`` and its UTF-8 in base64url (any string is a valid topic)."""
    if _PLAIN_TOPIC.fullmatch(topic):
        return topic
    encoded = base64.urlsafe_b64encode(topic.encode("utf-8", "surrogatepass")).decode().rstrip("=")
    return f"~.{encoded or '~'}"


def _tokens_topic(rest: str) -> Optional[str]:
    """The inverse of :func:`_subject_tokens`; ``None`` for tokens it cannot have made."""
    if not rest.startswith("~."):
        return rest
    encoded = rest[2:]
    if encoded == "~":
        return ""
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8", "surrogatepass")
    except (ValueError, UnicodeDecodeError):
        return None


async def _quiet_unsubscribe(sub: Any) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


class _Deliver(asyncio.Future):  # type: ignore[type-arg]
    """A subscription's messages handed over as nats-py reads them, with no task in between.

    nats-py runs a subscription's callback in a task of its own, fed by a queue: one
    task switch per message, and an idle task per subscription. Given a ``future``
    instead, it calls that future's ``set_result`` with each message, right where it
    parsed it (its "old style" request path): this future passes each to ``handler``
    and stays pending. ``handler`` must not block; what it raises is logged here, so
    that it cannot break nats-py's read loop.
    """

    def __init__(self, handler: Callable[[Any], None]) -> None:
        super().__init__()
        self._handler = handler

    def set_result(self, result: Any) -> None:
        try:
            self._handler(result)
        except Exception:
            logger.exception("cluster: a NATS message handler failed")


def _import_nats() -> Any:
    try:
        import nats
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("NatsBroker needs the nats-py package (2.6 or later): pip install fastwsrpc[nats]") from exc
    return nats


class NatsBroker:
    """A :class:`~fastwsrpc.cluster.Broker` on NATS: ``NatsBroker("nats://localhost:4222")``.

    ``namespace`` separates clusters sharing one NATS (it must be a valid subject
    token). ``history_storage`` is JetStream's storage for topic history (``"file"``
    survives a NATS restart, ``"memory"`` does not). ``sync_timeout`` bounds how long
    ``start`` (and each reconnect) waits for the peers' presence (see the module
    docstring); a lone node, or peers that all answer, do not wait it out.
    ``own_connection`` (the default) carries the calls, broadcasts and routed topics on
    a connection of the broker's own (:mod:`~fastwsrpc.cluster.natsproto`), when the
    URL and options allow (else, or ``False``, on nats-py's). With topics
    routed (``Cluster.per_topic``), a node subscribes to a subject per topic it watches,
    up to ``max_topic_subscriptions`` (then one wildcard for the rest), each kept
    ``topic_linger`` seconds after its last subscriber left (see
    :class:`~fastwsrpc.cluster.base.TopicInterest`). Other keywords go to
    ``nats.connect`` (credentials, TLS, ...).
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        namespace: str = "fastwsrpc",
        connect_timeout: float = 2.0,
        max_reconnect_wait: float = 2.0,
        history_storage: str = "file",
        sync_timeout: float = 2.0,
        max_topic_subscriptions: int = NATS_TOPIC_SUBSCRIPTIONS,
        topic_linger: float = TOPIC_LINGER,
        own_connection: bool = True,
        **nats_kwargs: Any,
    ) -> None:
        if history_storage not in ("file", "memory"):
            raise ValueError(f'history_storage must be "file" or "memory", got {history_storage!r}')
        if not namespace or any(ch in namespace for ch in " *>\t\r\n"):
            raise ValueError(f"namespace must be a valid NATS subject token, got {namespace!r}")
        self._nats = _import_nats()
        self.url = url
        self.namespace = namespace
        self.connect_timeout = connect_timeout
        self.max_reconnect_wait = max_reconnect_wait
        self.sync_timeout = sync_timeout
        self._nats_kwargs = nats_kwargs
        self.node_id = ""
        self._nc: Any = None
        self._generation = 0
        self._connected = False
        self._closed = False
        self._lost_event: Optional[asyncio.Event] = None
        self._supervisor: Optional[asyncio.Task[Any]] = None
        self._pending = PendingReplies()
        self._tasks: Set[asyncio.Task[Any]] = set()
        self._entries: Dict[str, _Entry] = {}
        self._node_seen: Dict[str, float] = {}
        #: This node's sync request in progress (see the module docstring), if any.
        self._sync: Optional[_Sync] = None
        #: The presence TTL the cluster gives this node's clients (its answers to a sync carry it).
        self._ttl = 15.0
        self._on_request: Optional[RequestHandler] = None
        self._on_message: Optional[MessageHandler] = None
        self._on_announce: Optional[NotifyHandler] = None
        self.history_storage = history_storage
        self._history: Optional[HistoryPolicy] = None
        #: JetStream context of the current connection, once the history stream is set up.
        self._js: Any = None
        self._js_setup: Optional[asyncio.Lock] = None
        #: The session records' bucket, with the connection it was opened on.
        self._kv: Optional[Tuple[Any, Any]] = None
        self._live_sub: Any = None
        #: Stream sequence this node has followed the history stream up to, and that stream's creation time.
        self._live_seq = 0
        self._stream_created: Any = None
        #: topic -> (stream sequence, epoch, offset) of its newest message, as last seen.
        self._tops: OrderedDict[str, Tuple[int, str, int]] = OrderedDict()
        self._topic_locks = _TopicLocks()
        #: Reads waiting for the live consumer to reach a stream sequence: (sequence, future).
        self._seq_waiters: List[Tuple[int, asyncio.Future[None]]] = []
        self._routing = False
        self._interest = TopicInterest(
            self._subscribe_topic, self._unsubscribe_topic, max_topic_subscriptions, topic_linger, connect_timeout
        )
        #: The cluster's own traffic on a connection driven by hand (see natsproto), when the
        #: options allow; else on nats-py's.
        self.own_connection = own_connection and natsproto.supported(url, nats_kwargs)
        self._hot: Optional[natsproto.NatsConnection] = None
        #: Handlers of the hot connection's subscriptions, by sid.
        self._handlers: Dict[int, Handler] = {}
        self._sids = 0
        #: Subjects as bytes (the hot path's, made once each).
        self._subjects: Dict[str, bytes] = {}
        #: The subscription of each topic (``None``: the wildcard) on the current connection:
        #: a sid on the hot connection, a :class:`_TopicSub` on nats-py's.
        self._topic_subs: Dict[Optional[str], Any] = {}
        #: Topic SUBs sent so far, barriers on their way by name, and the newest barrier
        #: (the SUBs it covers, its future, its connection): see :meth:`_barrier`.
        self._sub_seq = 0
        self._barrier_seq = 0
        self._barriers: Dict[str, asyncio.Future[None]] = {}
        self._last_barrier: Optional[Tuple[int, asyncio.Future[None], Any]] = None

    def __repr__(self) -> str:
        return f"NatsBroker({self.url!r}, namespace={self.namespace!r})"

    def _node_subject(self, node_id: str) -> str:
        return f"{self.namespace}.node.{node_id}"

    @property
    def _sync_subject(self) -> str:
        return f"{self.namespace}.sync"

    @property
    def _reply_prefix(self) -> str:
        return f"{self.namespace}.reply.{self.node_id}."

    @property
    def available(self) -> bool:
        return self._connected

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # ------------------------------------------------------------ connection
    async def start(
        self, node_id: str, on_request: RequestHandler, on_message: MessageHandler, on_announce: NotifyHandler
    ) -> None:
        self.node_id = node_id
        self._on_request, self._on_message, self._on_announce = on_request, on_message, on_announce
        self._lost_event = asyncio.Event()
        try:
            # Bounded whatever nats-py does: the first attach must never wait on the broker.
            await asyncio.wait_for(self._connect(), 2 * self.connect_timeout + self.sync_timeout + 1)
        except Exception as exc:
            logger.warning("cluster: NATS at %s unreachable (%s); retrying in the background", self.url, exc)
            self._lost_event.set()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _connect(self) -> None:
        assert self._lost_event is not None
        lost = self._lost_event
        generation = self._generation + 1

        async def on_gone() -> None:
            # Only for the connection in use: closing an old one must not tear down its successor.
            if generation == self._generation:
                lost.set()

        async def on_error(exc: Exception) -> None:
            logger.debug("cluster: NATS error: %r", exc)

        # nats-py's own reconnect is off: ours (tenacity) also fails what waits and re-announces.
        nc = await self._nats.connect(
            self.url,
            allow_reconnect=False,
            # 0 would mean "forever" inside connect(); 1 gives up after two tries.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.05,
            connect_timeout=self.connect_timeout,
            disconnected_cb=on_gone,
            closed_cb=on_gone,
            error_cb=on_error,
            **self._nats_kwargs,
        )
        hot: Optional[natsproto.NatsConnection] = None
        try:
            await nc.subscribe(f"{self.namespace}.presence", cb=self._on_presence_msg)
            own: List[Tuple[str, Handler]] = [
                (self._node_subject(self.node_id), self._on_node_msg),
                (f"{self.namespace}.all", self._on_all_msg),
                (self._reply_prefix + "*", self._on_reply_msg),
                (f"{self._sync_subject}.{self.node_id}", self._on_sync_msg),
            ]
            if self.own_connection:

                def hot_gone(reason: BaseException) -> None:
                    if generation == self._generation:
                        lost.set()

                self._handlers = {}
                hot = await natsproto.open_connection(
                    self.url, self._nats_kwargs, self._on_hot_msg, hot_gone, self.connect_timeout
                )
                for subject, handler in own:
                    self._hot_subscribe(hot, subject, handler)
                await asyncio.wait_for(hot.ping(), self.connect_timeout)  # every SUB in place
            else:
                for subject, handler in own:
                    await nc.subscribe(subject, future=_Deliver(_adapt(handler)))
            await nc.flush(timeout=self.connect_timeout)
        except BaseException:
            if hot is not None:
                hot.abort()
            await _quiet_close(nc)
            raise
        self._nc = nc
        self._hot = hot
        self._generation = generation
        lost.clear()
        self._connected = True
        self._js = None
        self._live_sub = None
        self._topic_subs.clear()
        self._interest.up()  # the topics watched, subscribed again (not waited for: no promise across an outage)
        await self._gossip(_Gossip(op="sync", n=self.node_id))
        await self._learn_presence(nc)
        if self._history is not None:
            await self._setup_history_quietly()
        if self._on_announce is not None:
            self._on_announce()

    async def _supervise(self) -> None:
        """Wait for the connection to drop; then fail what waits and reconnect with backoff.

        Nothing may end this loop but ``close()`` (see RedisBroker._listen).
        """
        assert self._lost_event is not None
        while not self._closed:
            try:
                await self._lost_event.wait()
                if self._closed:
                    return
                if self._connected:
                    logger.warning("cluster: lost the NATS connection; reconnecting")
                self._connected = False
                self._interest.down()
                self._topic_subs.clear()
                hot, self._hot = self._hot, None
                if hot is not None:
                    hot.abort()
                nc, self._nc = self._nc, None
                if nc is not None:
                    spawn(self._tasks, _quiet_close(nc))
                self._pending.fail_all(unavailable("NATS", ConnectionError("the connection dropped")))
                async for attempt in reconnect_retrying(self.max_reconnect_wait):
                    with attempt:
                        if self._closed:
                            return
                        await self._connect()
                logger.info("cluster: connected to NATS; announcing node %s", self.node_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("cluster: NATS supervisor error; carrying on")
                await asyncio.sleep(0)

    async def close(self) -> None:
        if self._closed:
            return
        if self._connected:
            try:
                await self._gossip(_Gossip(op="bye", n=self.node_id))
                await self._nc.flush(timeout=1)
            except Exception:
                pass
        self._closed = True
        self._connected = False
        self._interest.down()
        if self._lost_event is not None:
            self._lost_event.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        self._pending.fail_all(RpcNodeGoneError("this node left the cluster"))
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # unwound before the connection closes
        hot, self._hot = self._hot, None
        if hot is not None:
            hot.close()
        if self._nc is not None:
            await _quiet_close(self._nc)
            self._nc = None

    def _check(self) -> None:
        if not self._connected:
            raise RpcBrokerUnavailableError(f"NATS at {self.url} is unavailable (reconnecting)")

    async def _publish(self, subject: str, data: bytes, reply: str = "") -> None:
        self._check()
        errors = self._nats.errors
        try:
            await self._nc.publish(subject, data, reply=reply)
        except errors.MaxPayloadError as exc:
            raise RpcMessageTooLargeError(
                f"{len(data)} bytes exceed the NATS server's max_payload ({self._nc.max_payload})"
            ) from exc
        except (errors.Error, OSError) as exc:
            raise unavailable("NATS", exc) from exc

    def _hot_send(self, subject: str, data: bytes, reply: str = "") -> bool:
        """Publish on the hot connection if there is one (``False``: there is none, use nats-py's)."""
        hot = self._hot
        if hot is None:
            return False
        if len(data) > hot.max_payload:
            raise RpcMessageTooLargeError(f"{len(data)} bytes exceed the NATS server's max_payload ({hot.max_payload})")
        try:
            hot.publish(self._subject_bytes(subject), data, reply.encode() if reply else b"")
        except ConnectionError as exc:
            raise unavailable("NATS", exc) from exc
        return True

    def _subject_bytes(self, subject: str) -> bytes:
        encoded = self._subjects.get(subject)
        if encoded is None:
            if len(self._subjects) >= _SUBJECT_CACHE:
                self._subjects.clear()
            encoded = self._subjects[subject] = subject.encode()
        return encoded

    async def _send(self, subject: str, data: bytes, reply: str = "") -> None:
        """The cluster's own traffic: on the hot connection, else on nats-py's."""
        self._check()
        if not self._hot_send(subject, data, reply):
            await self._publish(subject, data, reply)

    async def _subscribe_core(self, nc: Any, subject: str, handler: Handler) -> None:
        """Subscribe where the cluster's own traffic goes (the hot connection, else nats-py's)."""
        hot = self._hot
        if hot is not None:
            self._hot_subscribe(hot, subject, handler)
        else:
            await nc.subscribe(subject, future=_Deliver(_adapt(handler)))

    def _hot_subscribe(self, hot: natsproto.NatsConnection, subject: str, handler: Handler) -> int:
        self._sids += 1
        sid = self._sids
        self._handlers[sid] = handler
        hot.subscribe(subject, sid)
        return sid

    def _on_hot_msg(self, sid: int, subject: str, reply: str, data: bytes, status: int) -> None:
        handler = self._handlers.get(sid)
        if handler is not None:
            handler(subject, reply, data, status)

    # ------------------------------------------------------------ messages
    def _on_node_msg(self, subject: str, reply: str, data: bytes, status: int) -> None:
        assert self._on_message is not None
        if reply:
            spawn(self._tasks, self._serve(reply, data))
        else:
            self._on_message(data)

    def _on_all_msg(self, subject: str, reply: str, data: bytes, status: int) -> None:
        assert self._on_message is not None
        self._on_message(data)

    def _on_reply_msg(self, subject: str, reply: str, data: bytes, status: int) -> None:
        suffix = subject[len(self._reply_prefix) :]
        if suffix.startswith("sync"):
            self._on_sync_reply(suffix, data, status)
            return
        if suffix.startswith("barrier-"):
            self._passed(suffix)
            return
        try:
            rid = int(suffix)
        except ValueError:
            return
        if status == 503:
            self._pending.fail(
                rid, RpcNodeGoneError("the node is gone (NATS: no responders on its subject)", delivered=False)
            )
        else:
            self._pending.resolve(rid, data)

    async def _serve(self, reply_to: str, data: bytes) -> None:
        assert self._on_request is not None
        try:
            reply = await self._on_request(data)
        except asyncio.CancelledError:
            return  # the caller gave up (or we are closing): nobody waits for a reply
        except Exception as exc:  # the cluster answers errors itself; a bug guard
            logger.exception("cluster request handler failed")
            reply = join_frame(Head(s="error", m=f"{type(exc).__name__}: {exc}"))
        try:
            await self._send(reply_to, reply)
        except Exception as exc:
            logger.debug("cluster: reply on %s not sent: %s", reply_to, exc)

    async def request(self, node_id: str, data: bytes, timeout: Optional[float]) -> bytes:
        self._check()
        rid, future = self._pending.add(node_id)
        try:
            await self._send(self._node_subject(node_id), data, f"{self._reply_prefix}{rid}")
        except BaseException:
            self._pending.discard(rid)
            raise
        return await self._pending.wait(rid, future, timeout, node_id)

    async def send(self, node_id: str, data: bytes) -> bool:
        await self._send(self._node_subject(node_id), data)
        return True

    async def publish(self, data: bytes) -> None:
        await self._send(f"{self.namespace}.all", data)

    async def check_peers(self) -> None:
        """Probe each node that calls wait on: the server answers "no responders" for a dead one.

        Also sets up topic history again if it failed (JetStream was not ready):
        until then this node would receive no publication kept in history.
        """
        if self._history is not None and self._js is None and self._connected:
            await self._setup_history_quietly()
        nodes = self._pending.nodes()
        if nodes:
            await asyncio.gather(*(self._probe(node) for node in nodes))

    async def _probe(self, node_id: str) -> None:
        """Ping a node that calls wait on; if nobody answers there, fail those calls.

        Only the calls sent before the probe: NATS keeps one connection's messages in
        order, so the server's "no responders" for each of those came before the
        probe's, and one still waiting was delivered (to a node that then died). A
        call sent after the probe gets its own "no responders", which says it was not
        delivered: it must not be failed first as "maybe delivered", or the cluster
        would not try the client's new node.
        """
        sent_before = self._pending.last_id
        try:
            await self.request(node_id, join_frame(Head(op="ping")), 2.0)
        except RpcNodeGoneError:  # the probe reached nobody; the calls waiting there did reach it
            self._pending.fail_node(
                node_id, RpcNodeGoneError(f"node {node_id} is gone (NATS: no responders)"), upto=sent_before
            )
        except RpcTimeoutError:
            if self._node_seen.get(node_id, 0.0) <= self._now():
                self._pending.fail_node(node_id, RpcNodeGoneError(f"node {node_id} is gone (no heartbeat)"))
        except RpcBrokerUnavailableError:
            pass

    # ------------------------------------------------------------ topic history
    @property
    def _stream_name(self) -> str:
        return f"{self.namespace}_topics"

    def _topic_subject(self, topic: str) -> str:
        """A topic's subject in the history stream."""
        return f"{self.namespace}.topic.{_subject_tokens(topic)}"

    def _subject_topic(self, subject: str) -> Optional[str]:
        prefix = f"{self.namespace}.topic."
        return _tokens_topic(subject[len(prefix) :]) if subject.startswith(prefix) else None

    # ------------------------------------------------------------ topics by topic
    def _live_subject(self, topic: str) -> str:
        """A topic's subject for routed delivery (core NATS, outside the history stream)."""
        return f"{self.namespace}.t.{_subject_tokens(topic)}"

    def route_topics(self, on: bool) -> None:
        """Routed, a history publication also goes to its topic's subject (after JetStream took
        it), and this node stops following the whole history stream."""
        if on == self._routing:
            return
        self._routing = on
        if on and self._live_sub is not None:
            sub, self._live_sub = self._live_sub, None
            spawn(self._tasks, _quiet_unsubscribe(sub))
        elif not on and self._history is not None and self._connected:
            self._js = None  # set up again: follow the stream
            spawn(self._tasks, self._setup_history_quietly())

    def watch_topic(self, topic: str) -> Optional[Awaitable[None]]:
        return self._interest.watch(topic)

    def unwatch_topic(self, topic: str) -> None:
        self._interest.unwatch(topic)

    async def publish_topic(self, topic: str, data: bytes) -> None:
        await self._send(self._live_subject(topic) if self._routing else f"{self.namespace}.all", data)

    def _barrier(self, nc: Any) -> asyncio.Future[None]:
        """Done once the server has processed every SUB this connection sent so far.

        A message to ourselves, on our reply subject: the server handles one connection's
        commands in order, so it comes back after them. (nats-py's ``flush`` is no such
        barrier: its PING is written straight to the socket and may overtake commands still
        buffered for its flusher.) Shared by the subscriptions it covers.
        """
        last = self._last_barrier
        if last is not None and last[0] >= self._sub_seq and last[2] is nc:
            return last[1]
        self._barrier_seq += 1
        name = f"barrier-{self._barrier_seq}"
        passed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[name] = passed
        self._last_barrier = (self._sub_seq, passed, nc)
        spawn(self._tasks, self._send_barrier(nc, name, passed))
        return passed

    async def _send_barrier(self, nc: Any, name: str, passed: asyncio.Future[None]) -> None:
        try:
            await nc.publish(self._reply_prefix + name, b"")
            await asyncio.wait_for(asyncio.shield(passed), self.connect_timeout)
        except Exception as exc:
            if not passed.done():
                passed.set_exception(exc)
        finally:
            self._barriers.pop(name, None)

    def _passed(self, name: str) -> None:
        passed = self._barriers.pop(name, None)
        if passed is not None and not passed.done():
            passed.set_result(None)

    def _subscribe_topic(self, topic: Optional[str]) -> Optional[asyncio.Future[Any]]:
        """Subscribe a topic's subject (every topic's: ``None``); done once the server has it
        (a PING's PONG on the hot connection; :meth:`_barrier` on nats-py's)."""
        nc = self._nc
        if nc is None or not self._connected:
            return None
        hot = self._hot
        if hot is not None:
            if hot.lost is not None:
                return None
            wildcard = topic is None
            subject = f"{self.namespace}.t.>" if topic is None else self._live_subject(topic)
            self._topic_subs[topic] = self._hot_subscribe(
                hot, subject, lambda subject, reply, data, status: self._on_topic_msg(subject, data, wildcard)
            )
            return hot.ping()
        holder = self._topic_subs[topic] = _TopicSub()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        spawn(self._tasks, self._make_topic_sub(nc, topic, holder, done))
        return done

    async def _make_topic_sub(
        self, nc: Any, topic: Optional[str], holder: _TopicSub, done: asyncio.Future[Any]
    ) -> None:
        wildcard = topic is None
        subject = f"{self.namespace}.t.>" if topic is None else self._live_subject(topic)
        try:
            deliver = _Deliver(lambda msg: self._on_topic_msg(msg.subject, msg.data, wildcard))
            holder.sub = await nc.subscribe(subject, future=deliver)
            self._sub_seq += 1
            if holder.dropped:
                await holder.sub.unsubscribe()
            else:
                await self._barrier(nc)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(None)

    def _unsubscribe_topic(self, topic: Optional[str]) -> None:
        holder = self._topic_subs.pop(topic, None)
        if isinstance(holder, int):
            self._handlers.pop(holder, None)
            hot = self._hot
            if hot is not None and hot.lost is None:
                hot.unsubscribe(holder)
        elif holder is not None:
            holder.dropped = True
            if holder.sub is not None:
                spawn(self._tasks, _quiet_unsubscribe(holder.sub))

    def _on_topic_msg(self, subject: str, data: bytes, wildcard: bool) -> None:
        assert self._on_message is not None
        prefix = f"{self.namespace}.t."
        topic = _tokens_topic(subject[len(prefix) :]) if subject.startswith(prefix) else None
        if topic is not None and self._interest.accepts(topic, wildcard):
            self._on_message(data)

    def enable_history(self, policy: HistoryPolicy) -> None:
        self._history = policy
        if self._connected and self._js is None:
            spawn(self._tasks, self._setup_history_quietly())

    async def _setup_history_quietly(self) -> None:
        try:
            await self._setup_history()
        except Exception as exc:
            logger.error(
                "cluster: NATS topic history unavailable (is JetStream on? nats-server -js): %s: %s",
                type(exc).__name__,
                exc,
            )

    async def _setup_history(self) -> Any:
        """Make (or adjust) the history stream and follow it; the JetStream context.

        One at a time, and for the current connection only: a reconnect sets it up
        again, resuming after the last stream sequence seen (unless the stream was
        made anew meanwhile: its old sequences mean nothing then).
        """
        if self._js_setup is None:
            self._js_setup = asyncio.Lock()
        async with self._js_setup:
            if self._js is not None:
                return self._js
            self._check()
            assert self._history is not None
            from nats.js import api
            from nats.js.errors import NotFoundError

            nc = self._nc
            js = nc.jetstream(timeout=self.connect_timeout)
            policy = self._history
            config = api.StreamConfig(
                name=self._stream_name,
                subjects=[f"{self.namespace}.topic.>"],
                max_msgs_per_subject=policy.size,
                max_age=policy.ttl or 0,
                storage=api.StorageType.FILE if self.history_storage == "file" else api.StorageType.MEMORY,
                discard=api.DiscardPolicy.OLD,
                num_replicas=1,
            )
            try:
                info = await js.stream_info(self._stream_name)
            except NotFoundError:
                info = await js.add_stream(config)
            else:
                current = info.config
                if current.max_msgs_per_subject != policy.size or (current.max_age or 0) != (policy.ttl or 0):
                    logger.warning(
                        "cluster: NATS stream %s kept %s messages per topic for %s s; now %s for %s s",
                        self._stream_name,
                        current.max_msgs_per_subject,
                        current.max_age,
                        policy.size,
                        policy.ttl,
                    )
                    current.max_msgs_per_subject = policy.size
                    current.max_age = policy.ttl or 0
                    info = await js.update_stream(current)
            if info.created != self._stream_created:
                # A stream we have not followed yet (or one made anew): follow it from now on.
                self._stream_created = info.created
                self._live_seq = info.state.last_seq
                self._tops.clear()
            if self._live_sub is not None:
                with contextlib.suppress(Exception):
                    await self._live_sub.unsubscribe()
                self._live_sub = None
            if self._routing:
                # Publications reach this node on the subjects of the topics it watches (see publish_history).
                self._js = js
                return js
            consumer = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._live_seq + 1
            )
            self._live_sub = await js.subscribe(
                f"{self.namespace}.topic.>",
                stream=self._stream_name,
                cb=self._on_history_msg,
                ordered_consumer=True,
                idle_heartbeat=5.0,
                config=consumer,
            )
            self._js = js
            return js

    async def _history_js(self) -> Any:
        self._check()
        if self._history is None:
            raise RuntimeError("topic history is not enabled on this broker (see Cluster.enable_topic_history)")
        if self._js is not None:
            return self._js
        try:
            return await self._setup_history()
        except RpcBrokerUnavailableError:
            raise
        except Exception as exc:
            raise RpcBrokerUnavailableError(
                f"NATS topic history is unavailable (is JetStream on? nats-server -js): {type(exc).__name__}: {exc}"
            ) from exc

    async def _on_history_msg(self, msg: Any) -> None:
        """A message of the history stream, in stream order: to this node's topic subscribers."""
        assert self._on_message is not None
        headers = msg.headers or {}
        try:
            epoch = headers[_EPOCH]
            offset = int(headers[_OFFSET])
            seq = msg.metadata.sequence.stream
        except (KeyError, ValueError, TypeError, AttributeError):
            return  # not one of ours
        self._live_seq = max(self._live_seq, seq)
        if self._seq_waiters:
            self._wake_readers()
        topic = self._subject_topic(msg.subject)
        if topic is None:
            return
        known = self._tops.get(topic)
        if known is not None and known[0] < seq:
            self._tops[topic] = (seq, epoch, offset)
        if offset > 0:  # 0: an epoch marker, not a publication
            self._on_message(join_frame(Head(op="topic", g=topic, e=epoch, o=offset), msg.data))

    def _wake_readers(self) -> None:
        waiting = []
        for seq, future in self._seq_waiters:
            if seq <= self._live_seq:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((seq, future))
        self._seq_waiters = waiting

    async def _delivered(self, seq: int) -> None:
        """Wait (at most ``connect_timeout``) until the live consumer has handed this node
        the stream up to ``seq``: a read's top must not overtake the live feed, or a new
        subscriber would skip a publication still on its way here (see TopicHub)."""
        if seq <= self._live_seq or self._live_sub is None:
            return
        future = asyncio.get_running_loop().create_future()
        self._seq_waiters.append((seq, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), self.connect_timeout)
        except asyncio.TimeoutError:
            logger.debug("cluster: NATS live feed still behind stream sequence %d", seq)
        finally:
            self._seq_waiters = [(s, f) for s, f in self._seq_waiters if f is not future]

    async def _last_of(self, js: Any, subject: str) -> Tuple[int, str, int]:
        """``(stream sequence, epoch, offset)`` of the subject's newest message; ``(0, "", 0)`` if none."""
        from nats.js.errors import NotFoundError

        try:
            msg = await js.get_last_msg(self._stream_name, subject)
        except NotFoundError:
            return 0, "", 0
        headers = msg.headers or {}
        try:
            return int(msg.seq), headers[_EPOCH], int(headers[_OFFSET])
        except (KeyError, ValueError):
            return int(msg.seq), "", 0  # a message that is not ours: the next one starts an epoch

    def _remember(self, topic: str, top: Tuple[int, str, int]) -> None:
        self._tops[topic] = top
        self._tops.move_to_end(topic)
        if len(self._tops) > _TOPS_CACHE:
            self._tops.popitem(last=False)

    async def _append(self, js: Any, topic: str, subject: str, body: bytes, marker: bool) -> Position:
        """Publish the topic's next offset (or, ``marker``, an epoch marker on an empty subject)
        with optimistic concurrency; see the module docstring."""
        from nats.js.errors import APIError

        #: The subject's last stream sequence as the server reported it, when newer than our view.
        stale = 0
        for attempt in range(_CAS_ATTEMPTS):
            known = self._tops.get(topic)
            if known is not None and known[0] < stale:
                # Lost to another node: our live feed brings its message (usually has already),
                # so the retry costs one round trip, as the other node's next publication does.
                await self._delivered(stale)
                known = self._tops.get(topic)
            if known is None or known[0] < stale:
                known = await self._last_of(js, subject)
            seq, epoch, offset = known
            if marker and epoch:
                return epoch, offset  # the topic has an epoch already
            if not epoch:
                epoch, offset = new_epoch(), 0
            number = offset if marker else offset + 1
            headers = {_EXPECT: str(seq), _EPOCH: epoch, _OFFSET: str(number)}
            try:
                ack = await js.publish(subject, body, headers=headers, stream=self._stream_name)
            except APIError as exc:
                if exc.err_code != _WRONG_LAST_SEQUENCE:
                    raise
                reported = re.search(r"(\d+)\s*$", exc.description or "")
                last = int(reported.group(1)) if reported else seq + 1
                if last < seq:  # the subject lost messages we remembered (expired): read it afresh
                    self._tops.pop(topic, None)
                    stale = 0
                else:
                    stale = max(seq + 1, last)
                if attempt:  # a little jitter, so that two nodes that keep colliding stop doing so
                    await asyncio.sleep(random.random() * min(0.0005 * attempt, 0.01))
                continue
            self._remember(topic, (int(ack.seq), epoch, number))
            return epoch, number
        raise RpcBrokerUnavailableError(
            f"NATS: gave up numbering a publication on topic {topic!r} after {_CAS_ATTEMPTS} attempts (contention)"
        )

    async def publish_history(self, topic: str, body: bytes) -> Position:
        """Number and keep the publication (the stream delivers it to the nodes following it);
        routed, also send it to the topic's subject, in the topic's lock so that this node's
        publications of a topic leave in order (another node's may come between, out of
        order: a subscriber then fills the gap from the history)."""
        js = await self._history_js()
        async with self._topic_locks.hold(topic):
            position: Position = await self._history_call(
                self._append(js, topic, self._topic_subject(topic), body, False)
            )
            if self._routing:
                frame = join_frame(Head(op="topic", g=topic, e=position[0], o=position[1]), body)
                try:
                    await self._send(self._live_subject(topic), frame)
                except RpcBrokerUnavailableError as exc:  # kept all the same: a subscriber fills the gap
                    logger.debug("cluster: publication %s of topic %r not routed: %s", position, topic, exc)
        return position

    async def read_history(self, topic: str, since: Optional[Position]) -> HistorySlice:
        js = await self._history_js()
        subject = self._topic_subject(topic)
        policy = self._history
        assert policy is not None
        seq, epoch, top = await self._history_call(self._last_of(js, subject))
        if not epoch:
            self._tops.pop(topic, None)  # the subject is empty: what we remembered of it expired
            async with self._topic_locks.hold(topic):
                epoch, top = await self._history_call(self._append(js, topic, subject, b"", True))
            return HistorySlice(epoch, top, [])
        entries: List[Tuple[int, bytes]] = []
        if since is not None and since[0] == epoch and 0 < top - since[1] <= policy.size:
            entries = await self._history_call(self._fetch(js, subject, epoch, since[1], seq, top))
        await self._delivered(seq)
        return HistorySlice(epoch, top, entries)

    async def _fetch(
        self, js: Any, subject: str, epoch: str, after: int, last_seq: int, top: int
    ) -> List[Tuple[int, bytes]]:
        """The subject's publications with offsets ``after`` < o <= ``top``, oldest first.

        JetStream cannot seek a subject by our offsets, so this reads the subject's
        messages from its oldest (at most N+1 of them) with a short-lived ordered
        consumer, up to the newest message seen by the caller's read.
        """
        from nats.js import api

        entries: List[Tuple[int, bytes]] = []
        sub = await js.subscribe(
            subject,
            stream=self._stream_name,
            ordered_consumer=True,
            idle_heartbeat=2.0,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL, inactive_threshold=10.0),
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=self.connect_timeout)
                headers = msg.headers or {}
                try:
                    offset = int(headers[_OFFSET])
                except (KeyError, ValueError):
                    offset = 0
                if after < offset <= top and headers.get(_EPOCH) == epoch:
                    entries.append((offset, msg.data))
                meta = msg.metadata
                if meta.sequence.stream >= last_seq or not meta.num_pending:
                    return entries
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _history_call(self, awaitable: Any) -> Any:
        """A JetStream operation: a connection problem or a timeout becomes RpcBrokerUnavailableError."""
        errors = self._nats.errors
        from nats.js.errors import Error as JsError
        from nats.js.errors import NoStreamResponseError

        try:
            return await awaitable
        except RpcBrokerUnavailableError:
            raise
        except (errors.Error, JsError, OSError, asyncio.TimeoutError) as exc:
            if getattr(exc, "err_code", None) == _STREAM_NOT_FOUND or isinstance(
                exc, (errors.NoRespondersError, NoStreamResponseError)
            ):
                # The stream was deleted (or NATS lost it): make it anew on the next call,
                # which starts new epochs; the consumer following the old one is gone too.
                self._js = None
                self._tops.clear()
            raise unavailable("NATS JetStream", exc) from exc

    # ------------------------------------------------------------ session records
    async def _sessions_kv(self, ttl: float) -> Any:
        """The JetStream key-value bucket of session records (made on first use; ``ttl``: its max age)."""
        self._check()
        nc = self._nc
        if self._kv is not None and self._kv[0] is nc:
            return self._kv[1]
        from nats.js import api
        from nats.js.errors import BucketNotFoundError

        js = nc.jetstream(timeout=self.connect_timeout)
        bucket = re.sub(r"[^A-Za-z0-9_-]", "_", self.namespace) + "_sessions"
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            storage = api.StorageType.FILE if self.history_storage == "file" else api.StorageType.MEMORY
            kv = await js.create_key_value(bucket=bucket, history=1, ttl=ttl, storage=storage)
        self._kv = (nc, kv)
        return kv

    async def _kv_call(self, awaitable: Any) -> Any:
        """A key-value operation: a connection problem, a timeout or JetStream's refusal becomes
        RpcBrokerUnavailableError (is JetStream on? ``nats-server -js``)."""
        from nats.js.errors import Error as JsError

        try:
            return await awaitable
        except RpcBrokerUnavailableError:
            raise
        except (self._nats.errors.Error, JsError, OSError, asyncio.TimeoutError) as exc:
            self._kv = None
            raise unavailable("NATS JetStream (session records)", exc) from exc

    async def session_take(self, session_id: str, node_id: str, ttl: float) -> Optional[str]:
        """Hold the session (key ``<id>.o``); the node that held it, ``None`` if the bucket does not know it."""
        kv = await self._kv_call(self._sessions_kv(ttl))
        previous = await self._kv_get(kv, f"{session_id}.o")
        await self._kv_call(kv.put(f"{session_id}.o", node_id.encode()))
        return previous.decode() if previous else None

    async def _kv_get(self, kv: Any, key: str) -> Optional[bytes]:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # never written, deleted, or aged out
            return None
        except Exception as exc:
            await self._kv_call(_raise(exc))
        return bytes(entry.value) if entry.value else None

    async def session_put(self, session_id: str, answers: Mapping[str, bytes], dropped: List[str], ttl: float) -> None:
        """Record answers (keys ``<id>.c.<key>``), delete evicted ones, and refresh the holder key (the bucket's
        max age counts from each key's last write)."""
        kv = await self._kv_call(self._sessions_kv(ttl))
        writes = [kv.put(f"{session_id}.c.{k}", v) for k, v in answers.items()]
        writes += [kv.delete(f"{session_id}.c.{k}") for k in dropped]
        writes.append(kv.put(f"{session_id}.o", self.node_id.encode()))
        results = await asyncio.gather(*(self._kv_call(w) for w in writes), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0] if isinstance(failed[0], RpcBrokerUnavailableError) else unavailable("NATS", failed[0])

    async def session_get(self, session_id: str, key: str) -> Optional[bytes]:
        kv = await self._kv_call(self._sessions_kv(DEFAULT_RECORD_TTL))
        return await self._kv_get(kv, f"{session_id}.c.{key}")

    async def session_keys(self, session_id: str) -> List[str]:
        """The keys with answers: a watch of ``<id>.c.>`` read up to its end marker."""
        kv = await self._kv_call(self._sessions_kv(DEFAULT_RECORD_TTL))
        watcher = await self._kv_call(kv.watch(f"{session_id}.c.>", ignore_deletes=True, meta_only=True))
        prefix = f"{session_id}.c."
        keys: List[str] = []
        try:
            for _ in range(1_000_000):  # bounded; a session remembers at most 10,000 by default
                entry = await self._kv_call(watcher.updates(self.connect_timeout))
                if entry is None:
                    break
                keys.append(entry.key[len(prefix) :])
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
        return keys

    # ------------------------------------------------------------ presence
    async def _gossip(self, message: _Gossip) -> None:
        await self._publish(f"{self.namespace}.presence", _gossip_encoder.encode(message))

    async def _on_presence_msg(self, msg: Any) -> None:
        try:
            message = _gossip_decoder.decode(msg.data)
        except msgspec.DecodeError:
            logger.warning("cluster: malformed presence message dropped")
            return
        if message.n == self.node_id:
            return  # our own changes are applied when made
        if message.op == "sync":
            if self._on_announce is not None:
                self._on_announce()
            return
        if message.op == "bye":
            self._forget_node(message.n)
            self._pending.fail_node(message.n, RpcNodeGoneError(f"node {message.n} left the cluster"))
            return
        self._apply(message)

    def _apply(self, message: _Gossip) -> None:
        now = self._now()
        node, until = message.n, now + message.ttl
        op = message.op
        if message.ttl:
            self._node_seen[node] = max(self._node_seen.get(node, 0.0), until)
        if op == "state" and message.cs is not None:
            for cid, groups in message.cs.items():
                self._entries[cid] = _Entry(node, until, set(groups))
        elif op == "add":
            self._entries[message.c] = _Entry(node, until, set())
        else:
            entry = self._entries.get(message.c)
            if entry is None or entry.node != node:
                return
            if op == "del":
                del self._entries[message.c]
            elif op == "join":
                entry.groups.add(message.g)
            elif op == "leave":
                entry.groups.discard(message.g)

    # ------------------------------------------------------------ joining (sync)
    async def _learn_presence(self, nc: Any) -> None:
        """Ask the peers for their clients and wait (at most ``sync_timeout``) until each answered.

        Never raises: a node that could not learn everything still serves, and learns
        the rest from the peers' announcements (they answer the ``sync`` gossip too).
        """
        now = self._now()
        sync = self._sync = _Sync({node for node, until in self._node_seen.items() if until > now})
        request = _gossip_encoder.encode(_Gossip(op="sync", n=self.node_id))
        try:
            try:
                # On the connection with the reply subscription: "no responders" goes to that one.
                await self._send(self._sync_subject, request, f"{self._reply_prefix}sync")
            finally:
                # Only now: our own request must reach nobody here, so that with no peer
                # the server answers "no responders" rather than leave us waiting.
                await self._subscribe_core(nc, self._sync_subject, self._on_sync_msg)
            deadline = now + self.sync_timeout
            while not sync.done(self.node_id):
                remaining = deadline - self._now()
                if remaining <= 0:
                    logger.warning(
                        "cluster: node %s joined without the presence of %s (no answer within %s s)",
                        self.node_id,
                        ", ".join(sorted(sync.missing(self.node_id))) or "any peer",
                        self.sync_timeout,
                    )
                    return
                sync.changed.clear()
                try:
                    await asyncio.wait_for(sync.changed.wait(), min(remaining, _SYNC_GRACE))
                except asyncio.TimeoutError:
                    for node in sync.missing(self.node_id) - sync.asked:
                        sync.asked.add(node)
                        await self._send(f"{self._sync_subject}.{node}", request, f"{self._reply_prefix}sync-{node}")
        except Exception as exc:
            logger.warning("cluster: node %s could not ask its peers for presence: %s", self.node_id, exc)
        finally:
            if self._sync is sync:
                self._sync = None

    def _on_sync_reply(self, suffix: str, data: bytes, status: int) -> None:
        """An answer to our sync request: a peer's clients, its ``ready``, or "no responders"."""
        sync = self._sync
        if status == 503:
            if sync is not None:
                if suffix == "sync":
                    sync.nobody = True
                else:
                    sync.gone.add(suffix[len("sync-") :])
                sync.changed.set()
            return
        try:
            message = _gossip_decoder.decode(data)
        except msgspec.DecodeError:
            logger.warning("cluster: malformed presence message dropped")
            return
        if message.op == "state":
            self._apply(message)  # late or not, it is what that node holds
        elif message.op == "ready" and sync is not None:
            sync.answered.add(message.n)
            sync.expected.update(message.k or ())
            sync.changed.set()

    def _on_sync_msg(self, subject: str, reply: str, data: bytes, status: int) -> None:
        """A node joining asks for our clients: answer on its reply subject (not to everyone)."""
        try:
            message = _gossip_decoder.decode(data)
        except msgspec.DecodeError:
            logger.warning("cluster: malformed presence message dropped")
            return
        if message.n == self.node_id or not reply:
            return
        spawn(self._tasks, self._answer_sync(reply))

    async def _answer_sync(self, reply_to: str) -> None:
        """This node's own clients (as ``state`` messages), then ``ready`` naming the nodes it knows."""
        now = self._now()
        mine = {
            cid: sorted(entry.groups)
            for cid, entry in list(self._entries.items())
            if entry.node == self.node_id and entry.until > now
        }
        alive = {node for node, until in self._node_seen.items() if until > now}
        alive.add(self.node_id)
        try:
            for chunk in _chunks(mine):
                message = _Gossip(op="state", n=self.node_id, ttl=self._ttl, cs=chunk)
                await self._publish(reply_to, _gossip_encoder.encode(message))
            await self._publish(reply_to, _gossip_encoder.encode(_Gossip(op="ready", n=self.node_id, k=sorted(alive))))
        except Exception as exc:
            logger.debug("cluster: answer to a sync on %s not sent: %s", reply_to, exc)

    def _forget_node(self, node_id: str) -> None:
        self._node_seen.pop(node_id, None)
        for cid in [cid for cid, entry in self._entries.items() if entry.node == node_id]:
            del self._entries[cid]

    def _live(self, client_id: str, now: float) -> Optional[_Entry]:
        entry = self._entries.get(client_id)
        if entry is not None and entry.until <= now:
            del self._entries[client_id]
            return None
        return entry

    async def register(self, client_id: str, node_id: str, ttl: float) -> Optional[str]:
        self._check()
        self._ttl = ttl
        previous = self._live(client_id, self._now())
        message = _Gossip(op="add", n=node_id, ttl=ttl, c=client_id)
        self._apply(message)
        await self._gossip(message)
        return previous.node if previous is not None else None

    async def unregister(self, client_id: str, node_id: str, groups: Collection[str]) -> None:
        self._check()
        message = _Gossip(op="del", n=node_id, c=client_id)
        self._apply(message)
        await self._gossip(message)

    async def locate(self, client_id: str) -> Optional[str]:
        self._check()
        entry = self._live(client_id, self._now())
        return entry.node if entry is not None else None

    async def join(self, group: str, client_id: str, node_id: str, ttl: float) -> None:
        self._check()
        message = _Gossip(op="join", n=node_id, c=client_id, g=group)
        self._apply(message)
        await self._gossip(message)

    async def leave(self, group: str, client_id: str) -> None:
        self._check()
        entry = self._entries.get(client_id)
        if entry is None:
            return
        message = _Gossip(op="leave", n=entry.node, c=client_id, g=group)
        self._apply(message)
        await self._gossip(message)

    async def heartbeat(self, node_id: str, clients: Mapping[str, Collection[str]], ttl: float) -> None:
        self._check()
        now = self._now()
        for cid in [cid for cid, entry in self._entries.items() if entry.until <= now]:
            del self._entries[cid]
        for node in [node for node, until in self._node_seen.items() if until <= now]:
            del self._node_seen[node]
        self._ttl = ttl
        for chunk in _chunks(clients):
            await self._send_state(node_id, chunk, ttl)

    async def _send_state(self, node_id: str, chunk: Dict[str, List[str]], ttl: float) -> None:
        message = _Gossip(op="state", n=node_id, ttl=ttl, cs=chunk)
        self._apply(message)
        await self._gossip(message)

    async def clients(self, group: Optional[str] = None) -> List[str]:
        self._check()
        now = self._now()
        return [
            cid
            for cid, entry in list(self._entries.items())
            if entry.until > now and (group is None or group in entry.groups)
        ]


def _chunks(clients: Mapping[str, Collection[str]]) -> List[Dict[str, List[str]]]:
    """``clients`` (id -> groups) in pieces of about ``_STATE_CHUNK_BYTES``; one (empty) at least."""
    chunks: List[Dict[str, List[str]]] = []
    chunk: Dict[str, List[str]] = {}
    size = 0
    for cid, groups in clients.items():
        chunk[cid] = list(groups)
        size += len(cid) + sum(len(g) + 3 for g in groups) + 6
        if size >= _STATE_CHUNK_BYTES:
            chunks.append(chunk)
            chunk, size = {}, 0
    if chunk or not chunks:
        chunks.append(chunk)
    return chunks


async def _raise(exc: BaseException) -> Any:
    raise exc


async def _quiet_close(nc: Any) -> None:
    try:
        await nc.close()
    except Exception:
        pass
