"""RedisBroker: the cluster on Redis (redis-py's asyncio API; ``pip install fastwsrpc[redis]``).

What lives in Redis, under a namespace (default ``fastwsrpc``):

* channel ``{ns}:node:{node_id}``: messages to one node (requests, replies, one-way);
* channel ``{ns}:all``: broadcasts (and topic publications, unless topics are routed);
* channel ``{ns}:t:{topic}``: a topic's publications, with topics routed
  (``Cluster.per_topic``): a node subscribes to the topics it watches, one channel
  each (up to ``max_topic_subscriptions``, then the pattern ``{ns}:t:*`` brings the
  rest; see :class:`~fastwsrpc.cluster.base.TopicInterest`), so that a publication
  reaches only the nodes with a subscriber;
* key ``{ns}:c:{client_id}`` = ``node_id`` with a TTL: presence, refreshed by the
  holding node's heartbeat, so a dead node's clients vanish within the TTL;
* key ``{ns}:n:{node_id}`` with a TTL: the node's own heartbeat;
* hash ``{ns}:g:{group}``: ``client_id -> node_id``; a membership counts only while
  that node still holds that client, so a crashed node's memberships are ignored
  (and cleaned when seen) without a per-field TTL;
* hash ``{ns}:s:{session_id}``: a session's holder (``o`` = node id) and the answers
  of its idempotent calls (``c:<key>``), expiring ``session_ttl`` after its last
  write: what another node needs to resume the session (see ``fastwsrpc/sessions.py``);
* with topic history on: stream ``{ns}:th:{topic}`` (the last N publications, each
  entry ``o`` = offset, ``d`` = the JSON) and hash ``{ns}:tm:{topic}`` (``e`` = epoch,
  ``s`` = newest offset), both expiring ``ttl`` after the topic's last publication.
  One Lua script numbers a publication (``HINCRBY``), stores it (``XADD MAXLEN``,
  ``XTRIM MINID`` for the TTL) and ``PUBLISH``es it (to every node, or to the
  topic's channel when routed): atomic, so every node receives a topic's
  publications in offset order. A flushed or restarted Redis
  has no meta hash any more: the next publication or read makes a new epoch.

A request is a ``PUBLISH`` to the node's channel with a header naming the sender and a
number; the reply is a ``PUBLISH`` back to the sender's channel. ``PUBLISH`` answers how
many subscribers got the message: 0 means no node listens there any more, so a call
to a dead node fails at once instead of waiting; ``PUBSUB NUMSUB`` does the same check
for calls already waiting, every heartbeat.

The node's subscription and its ``PUBLISH``es each have a connection of their own,
driven by hand (:mod:`fastwsrpc.cluster.resp`): a message is parsed and dispatched in
the protocol's ``data_received``, and a ``PUBLISH`` is written from the step that
makes it (those of one event-loop turn after the first leave together in one write),
with no task in between, and one connection keeps this node's messages in the order
they were made (a request before its cancellation). A request does not wait for its
``PUBLISH`` answer before waiting for its reply: the answer is checked when it comes,
and a 0 (nobody listens) fails the waiting call at once. Every other command goes
through redis-py.

Pub/sub is at-most-once: when the subscription drops, every request waiting for a
reply fails with ``RpcBrokerUnavailableError`` (its reply could be lost), the broker
reconnects with tenacity (exponential backoff with jitter) and the cluster
re-announces its clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Collection, Dict, List, Mapping, Optional, Set, Tuple

import msgspec

from ..errors import RpcBrokerUnavailableError
from ..topics import HistoryPolicy, HistorySlice, Position, new_epoch
from .base import (
    MAX_TOPIC_SUBSCRIPTIONS,
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
from .resp import OnReply, ReplyError, RespConnection, command, take_over

logger = logging.getLogger("fastwsrpc.cluster")

__all__ = ["RedisBroker"]

#: Peers whose channel name this node keeps encoded (cleared when full).
_CHANNEL_CACHE = 10_000

#: Compare-and-delete: remove a client's presence only if this node still holds it.
_UNREGISTER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[i], ARGV[2]) end
end
return 0
"""


#: A heartbeat's client records, refreshed in one command per chunk. KEYS: the client keys.
#: ARGV: the node, the TTL in ms.
_REFRESH = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return #KEYS
"""
#: Client keys per refresh command: Redis runs a script to its end, so a chunk is kept short
#: (about a millisecond of Redis time) for the calls and publications that wait behind it.
_REFRESH_CHUNK = 1000


#: Number, keep and deliver one publication (see the module docstring). KEYS: stream, meta.
#: ARGV: size, ttl in ms (0: none), a fresh epoch (used if the topic has none), the
#: channel, the routing header up to the epoch's opening quote, the JSON body.
_PUBLISH_HISTORY = """
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
end
local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'o', offset, 'd', ARGV[6])
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', ms - ttl))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PUBLISH', ARGV[4], ARGV[5] .. epoch .. '","o":' .. string.format('%d', offset) .. '}\\n' .. ARGV[6])
return {epoch, offset}
"""

#: A topic's position and the entries after ``since``, in one atomic read. KEYS: stream,
#: meta. ARGV: a fresh epoch (kept if the topic has none), ttl in ms (0: none), since's
#: epoch ('' for none), since's offset, size. Entries come newest first (XREVRANGE).
_READ_HISTORY = """
local meta = redis.call('HMGET', KEYS[2], 'e', 's')
local epoch, top = meta[1], tonumber(meta[2])
if not epoch then
  epoch = ARGV[1]
  top = 0
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
local items = {}
if ARGV[3] == epoch then
  local want = top - tonumber(ARGV[4])
  if want > 0 and want <= tonumber(ARGV[5]) then
    items = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', want)
  end
end
return {epoch, top, items}
"""


class _Envelope(msgspec.Struct, omit_defaults=True, gc=False):
    """The broker's own header on a node channel: ``k`` is q(uery), a(nswer) or m(essage)."""

    k: str
    r: int = 0
    f: str = ""


_env_decoder = msgspec.json.Decoder(_Envelope)


class _Publisher:
    """Every ``PUBLISH`` of a node, in order, on one connection of its own (see :mod:`.resp`).

    ``put`` writes at once when the connection is up; while it is being (re)opened,
    messages wait in a list and leave in order once it is. A connection that drops is
    opened again by the next ``put``; the messages it had not been answered for get a
    ``ConnectionError`` (they may or may not have reached Redis).
    """

    def __init__(self, redis: Any, timeout: float, tasks: Set[asyncio.Task[Any]]) -> None:
        self._redis = redis
        self._timeout = timeout
        self._tasks = tasks
        self._conn: Optional[RespConnection] = None
        self._queue: List[Tuple[bytes, OnReply]] = []
        self._opening: Optional[asyncio.Task[None]] = None
        self._closed = False

    def put(self, channel: bytes, data: bytes, on_reply: OnReply) -> None:
        """Queue one ``PUBLISH``; ``on_reply`` gets its receiver count, or the exception
        that stands for it (called later, never from within ``put``)."""
        frame = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(channel), channel, len(data), data)
        conn = self._conn
        if conn is not None and conn.lost is None:
            conn.send(frame, on_reply)
            return
        if self._closed:
            asyncio.get_running_loop().call_soon(on_reply, ConnectionError("the Redis broker is closing"))
            return
        self._queue.append((frame, on_reply))
        if self._opening is None:
            self._opening = spawn(self._tasks, self._open())

    async def _open(self) -> None:
        conn = RespConnection(lambda reason: self._dropped(conn), self._timeout)
        failure: Optional[BaseException] = None
        try:
            await take_over(self._redis, conn)
        except asyncio.CancelledError:
            failure = ConnectionError("the Redis broker is closing")
            raise
        except Exception as exc:
            failure = exc
        finally:
            self._opening = None
            queue, self._queue = self._queue, []
            if failure is None:
                self._conn = conn
                for frame, on_reply in queue:
                    conn.send(frame, on_reply)
            else:
                for _, on_reply in queue:
                    on_reply(failure)

    def _dropped(self, conn: RespConnection) -> None:
        if self._conn is conn:
            self._conn = None

    def close(self) -> None:
        self._closed = True
        if self._opening is not None:
            self._opening.cancel()
        if self._conn is not None:
            self._conn.close()


def _ignore_reply(reply: Any) -> None:
    """The ``PUBLISH`` of an answer: nothing to do with its count (a caller that vanished is
    found by its own side)."""
    if isinstance(reply, BaseException):
        logger.debug("cluster: an answer was not published: %s", reply)


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "RedisBroker needs the redis package (redis-py 5 or later): pip install fastwsrpc[redis]"
        ) from exc
    return aioredis


class RedisBroker:
    """A :class:`~fastwsrpc.cluster.Broker` on Redis: ``RedisBroker("redis://localhost:6379/0")``.

    ``rediss://`` URLs use TLS. ``namespace`` separates clusters sharing one Redis.
    ``socket_timeout`` bounds every command, so a hung Redis fails calls instead of
    stalling them. With topics routed (``Cluster.per_topic``), a node subscribes to a
    channel per topic it watches, up to ``max_topic_subscriptions`` (then one pattern
    for the rest), each kept ``topic_linger`` seconds after its last subscriber left
    (see :class:`~fastwsrpc.cluster.base.TopicInterest`). Other keywords go to
    ``redis.asyncio.Redis.from_url``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "fastwsrpc",
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        max_reconnect_wait: float = 2.0,
        max_topic_subscriptions: int = MAX_TOPIC_SUBSCRIPTIONS,
        topic_linger: float = TOPIC_LINGER,
        **redis_kwargs: Any,
    ) -> None:
        self._aioredis = _import_redis()
        self.url = url
        self.namespace = namespace
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.max_reconnect_wait = max_reconnect_wait
        self._redis_kwargs = redis_kwargs
        self.node_id = ""
        self._redis: Any = None
        #: The subscription's connection while it is up, and the task that keeps it up.
        self._sub: Optional[RespConnection] = None
        self._sub_gone: Optional[asyncio.Event] = None
        self._listener: Optional[asyncio.Task[Any]] = None
        #: Channel names as bytes, by node (the hot path's, made once per peer).
        self._channels: Dict[str, bytes] = {}
        self._node_b = b""
        self._all_b = b""
        #: The end of this node's request envelopes, after the request number.
        self._query_tail = b""
        self._connected = False
        self._closed = False
        self._pending = PendingReplies()
        #: The newest request whose ``PUBLISH`` was answered (they are answered in order).
        self._published_upto = 0
        self._tasks: Set[asyncio.Task[Any]] = set()
        self._on_request: Optional[RequestHandler] = None
        self._on_message: Optional[MessageHandler] = None
        self._on_announce: Optional[NotifyHandler] = None
        self._unregister: Any = None
        self._refresh: Any = None
        self._publisher: Optional[_Publisher] = None
        self._history: Optional[HistoryPolicy] = None
        self._publish_history: Any = None
        self._read_history: Any = None
        self._routing = False
        self._topic_prefix = f"{namespace}:t:".encode()
        self._topic_pattern = (_glob_escape(f"{namespace}:t:") + "*").encode()
        self._interest = TopicInterest(
            self._subscribe_topic, self._unsubscribe_topic, max_topic_subscriptions, topic_linger, socket_timeout
        )

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r}, namespace={self.namespace!r})"

    # ------------------------------------------------------------ names
    def _node_channel(self, node_id: str) -> str:
        return f"{self.namespace}:node:{node_id}"

    def _channel_of(self, node_id: str) -> bytes:
        channel = self._channels.get(node_id)
        if channel is None:
            if len(self._channels) >= _CHANNEL_CACHE:
                self._channels.clear()
            channel = self._channels[node_id] = self._node_channel(node_id).encode()
        return channel

    def _client_key(self, client_id: str) -> str:
        return f"{self.namespace}:c:{client_id}"

    def _group_key(self, group: str) -> str:
        return f"{self.namespace}:g:{group}"

    def _topic_channel(self, topic: str) -> bytes:
        return self._topic_prefix + topic.encode("utf-8", "surrogatepass")

    def _history_keys(self, topic: str) -> List[str]:
        return [f"{self.namespace}:th:{topic}", f"{self.namespace}:tm:{topic}"]

    @property
    def available(self) -> bool:
        return self._connected

    # ------------------------------------------------------------ connection
    async def start(
        self, node_id: str, on_request: RequestHandler, on_message: MessageHandler, on_announce: NotifyHandler
    ) -> None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.node_id = node_id
        self._on_request, self._on_message, self._on_announce = on_request, on_message, on_announce
        # One immediate retry (a pooled connection may be stale after a Redis restart),
        # then fail: the cluster turns that into RpcBrokerUnavailableError, fast.
        self._redis = self._aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.connect_timeout,
            retry=Retry(NoBackoff(), 1),
            **self._redis_kwargs,
        )
        self._unregister = self._redis.register_script(_UNREGISTER)
        self._refresh = self._redis.register_script(_REFRESH)
        self._publish_history = self._redis.register_script(_PUBLISH_HISTORY)
        self._read_history = self._redis.register_script(_READ_HISTORY)
        self._node_b = self._node_channel(node_id).encode()
        self._all_b = f"{self.namespace}:all".encode()
        self._query_tail = b',"f":' + msgspec.json.encode(node_id) + b"}\n"
        self._publisher = _Publisher(self._redis, self.socket_timeout, self._tasks)
        self._sub_gone = asyncio.Event()
        try:
            await asyncio.wait_for(self._subscribe(), 2 * self.connect_timeout + 1)
        except Exception as exc:
            logger.warning("cluster: Redis at %s unreachable (%s); retrying in the background", self.url, exc)
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _subscribe(self) -> None:
        """Open the subscription's connection and subscribe (this node's channel, the broadcasts,
        the topics watched); connected once Redis confirmed it."""
        assert self._sub_gone is not None
        conn = RespConnection(lambda reason: self._sub_dropped(conn, reason), self.socket_timeout, self._on_push)
        await take_over(self._redis, conn)
        self._sub = conn
        try:
            confirmed: List[Any] = [self._sub_command(conn, b"SUBSCRIBE", ch) for ch in (self._node_b, self._all_b)]
            confirmed += self._interest.up()
            await asyncio.wait_for(asyncio.gather(*confirmed), self.socket_timeout)
        except BaseException:
            conn.abort()
            raise
        if conn.lost is not None:
            raise conn.lost
        self._connected = True
        self._sub_gone.clear()
        if self._on_announce is not None:
            self._on_announce()

    def _sub_command(self, conn: RespConnection, verb: bytes, channel: bytes) -> asyncio.Future[Any]:
        """``SUBSCRIBE``/``UNSUBSCRIBE`` one channel; the future completes with Redis' confirmation."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def confirmed(reply: Any) -> None:
            if future.done():
                return
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

        conn.send(command(verb, channel), confirmed)
        return future

    def _sub_dropped(self, conn: RespConnection, reason: BaseException) -> None:
        """The subscription's connection ended: fail what waits on it and have the listener reconnect."""
        if self._sub is not conn:
            return  # one replaced already
        self._sub = None
        self._interest.down()
        if self._closed:
            return
        if self._connected:
            logger.warning("cluster: lost the Redis subscription (%s); reconnecting", reason)
            self._connected = False
            self._pending.fail_all(unavailable("Redis", reason))
        assert self._sub_gone is not None
        self._sub_gone.set()

    # ------------------------------------------------------------ topics by topic
    def route_topics(self, on: bool) -> None:
        self._routing = on

    def watch_topic(self, topic: str) -> Optional[Awaitable[None]]:
        return self._interest.watch(topic)

    def unwatch_topic(self, topic: str) -> None:
        self._interest.unwatch(topic)

    async def publish_topic(self, topic: str, data: bytes) -> None:
        await self._publish(self._topic_channel(topic) if self._routing else self._all_b, data)

    def _subscribe_topic(self, topic: Optional[str]) -> Optional[asyncio.Future[Any]]:
        """``SUBSCRIBE`` a topic's channel (``PSUBSCRIBE`` every topic's: ``None``); its confirmation."""
        conn = self._sub
        if conn is None or conn.lost is not None:
            return None
        if topic is None:
            return self._sub_command(conn, b"PSUBSCRIBE", self._topic_pattern)
        return self._sub_command(conn, b"SUBSCRIBE", self._topic_channel(topic))

    def _unsubscribe_topic(self, topic: Optional[str]) -> None:
        conn = self._sub
        if conn is not None and conn.lost is None:
            if topic is None:
                conn.send(command(b"PUNSUBSCRIBE", self._topic_pattern), _ignore_reply)
            else:
                conn.send(command(b"UNSUBSCRIBE", self._topic_channel(topic)), _ignore_reply)

    async def _listen(self) -> None:
        """Keep the subscription up: reconnect (with backoff) whenever it is down.

        Nothing may end this loop but ``close()``: a listener that died would leave
        the node deaf for good, so an unexpected error is logged and the loop goes on.
        """
        assert self._sub_gone is not None
        while not self._closed:
            try:
                if self._sub is None:
                    async for attempt in reconnect_retrying(self.max_reconnect_wait):
                        with attempt:
                            if self._closed:
                                return
                            await asyncio.wait_for(self._subscribe(), 2 * self.connect_timeout + 1)
                    logger.info("cluster: connected to Redis; announcing node %s", self.node_id)
                await self._sub_gone.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._closed:
                    return
                logger.exception("cluster: Redis listener error; carrying on")
                await asyncio.sleep(0)  # a failure that repeats at once must not starve the loop

    async def close(self) -> None:
        self._closed = True
        self._connected = False
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        self._pending.fail_all(RpcNodeGoneError("this node left the cluster"))
        self._interest.down()
        if self._publisher is not None:
            self._publisher.close()
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        # Let them unwind before the pool closes: a task cancelled while its
        # connection was being made hands it back to the pool, and aclose() must
        # see it there (run after, the socket was left open).
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:
                pass

    def _on_push(self, message: List[Any]) -> None:
        """A message off the subscription (called from the protocol: must not block)."""
        assert self._on_message is not None
        if len(message) == 3:
            channel, data = message[1], message[2]
            if channel == self._node_b:
                self._dispatch(data)
                return
            if channel == self._all_b:
                self._on_message(data)
                return
            wildcard = False
        else:  # pmessage: pattern, channel, data (only the topics' pattern is subscribed)
            channel, data = message[2], message[3]
            wildcard = True
        prefix = self._topic_prefix
        if channel.startswith(prefix):
            topic = channel[len(prefix) :].decode("utf-8", "surrogatepass")
            if self._interest.accepts(topic, wildcard):
                self._on_message(data)

    def _dispatch(self, data: bytes) -> None:
        """A message to this node; requests are served in tasks of their own."""
        cut = data.find(b"\n")
        try:
            env = _env_decoder.decode(data[:cut])
        except (msgspec.DecodeError, ValueError):
            logger.warning("cluster: malformed Redis message dropped")
            return
        body = data[cut + 1 :]
        if env.k == "a":
            self._pending.resolve(env.r, body)
        elif env.k == "q":
            spawn(self._tasks, self._serve(env, body))
        else:
            assert self._on_message is not None
            self._on_message(body)

    async def _serve(self, env: _Envelope, body: bytes) -> None:
        assert self._on_request is not None
        try:
            reply = await self._on_request(body)
        except asyncio.CancelledError:
            return  # the caller gave up (or we are closing): nobody waits for a reply
        except Exception as exc:  # the cluster answers errors itself; a bug guard
            logger.exception("cluster request handler failed")
            reply = join_frame(Head(s="error", m=f"{type(exc).__name__}: {exc}"))
        assert self._publisher is not None
        self._publisher.put(self._channel_of(env.f), b'{"k":"a","r":%d}\n%s' % (env.r, reply), _ignore_reply)

    async def _publish(self, channel: bytes, data: bytes) -> int:
        """One ``PUBLISH`` (see :class:`_Publisher`); its receiver count."""
        self._check()
        assert self._publisher is not None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def answered(reply: Any) -> None:
            if future.done():
                return
            if isinstance(reply, BaseException):
                future.set_exception(_broker_error(reply))
            else:
                future.set_result(int(reply))

        self._publisher.put(channel, data, answered)
        return await future

    async def _run(self, coro: Any) -> Any:
        """Run one Redis command; a connection problem becomes RpcBrokerUnavailableError."""
        try:
            return await coro
        except Exception as exc:
            error = _broker_error(exc)
            if error is exc:
                raise
            raise error from exc

    def _check(self) -> None:
        if not self._connected:
            raise RpcBrokerUnavailableError(f"Redis at {self.url} is unavailable (reconnecting)")

    # ------------------------------------------------------------ messages
    async def request(self, node_id: str, data: bytes, timeout: Optional[float]) -> bytes:
        """Publish the request and wait for the reply, without a wait for the ``PUBLISH``
        answer in between: :meth:`_published` fails the call when that answer says nobody
        got it (or the command failed), which is all the answer was awaited for."""
        self._check()
        assert self._publisher is not None
        rid, future = self._pending.add(node_id)
        message = b'{"k":"q","r":%d%s%s' % (rid, self._query_tail, data)
        self._publisher.put(self._channel_of(node_id), message, lambda reply: self._published(reply, rid, node_id))
        return await self._pending.wait(rid, future, timeout, node_id)

    def _published(self, reply: Any, rid: int, node_id: str) -> None:
        """The ``PUBLISH`` of request ``rid`` was answered: fail it if it reached nobody."""
        if rid > self._published_upto:
            self._published_upto = rid
        if isinstance(reply, BaseException):
            self._pending.fail(rid, _broker_error(reply))
        elif not reply:
            self._pending.fail(
                rid, RpcNodeGoneError(f"node {node_id} is gone (nobody listens on its Redis channel)", delivered=False)
            )

    async def send(self, node_id: str, data: bytes) -> bool:
        return bool(await self._publish(self._channel_of(node_id), b'{"k":"m"}\n' + data))

    async def publish(self, data: bytes) -> None:
        await self._publish(self._all_b, data)

    async def check_peers(self) -> None:
        """Probe each node that calls wait on (``PUBSUB NUMSUB``); fail those calls where nobody listens.

        Only the calls whose own ``PUBLISH`` was answered before the probe went out:
        those reached the node (a 0 has failed them already), so the node left since,
        and they fail as maybe delivered. A call whose ``PUBLISH`` answer is still to
        come (the probe travels on another connection, so either answer may come
        first) is left to that answer, which tells whether it reached anyone: failed
        first as "maybe delivered", it would keep the cluster from trying the
        client's new node. A later probe, or its timeout, covers it otherwise.
        """
        nodes = sorted(self._pending.nodes())
        if not nodes:
            return
        upto = self._published_upto
        counts = await self._run(self._redis.pubsub_numsub(*(self._node_channel(n) for n in nodes)))
        for (_, count), node in zip(counts, nodes):
            if not count:
                self._pending.fail_node(
                    node, RpcNodeGoneError(f"node {node} is gone (left its Redis channel)"), upto=upto
                )

    # ------------------------------------------------------------ topic history
    def enable_history(self, policy: HistoryPolicy) -> None:
        self._history = policy

    def _policy(self) -> HistoryPolicy:
        if self._history is None:
            raise RuntimeError("topic history is not enabled on this broker (see Cluster.enable_topic_history)")
        return self._history

    async def publish_history(self, topic: str, body: bytes) -> Position:
        """Number, keep and publish in one script (one round trip; atomic, so in order)."""
        self._check()
        policy = self._policy()
        head = b'{"op":"topic","g":' + msgspec.json.encode(topic) + b',"e":"'
        ttl = 0 if policy.ttl is None else _ms(policy.ttl)
        channel = self._topic_channel(topic) if self._routing else self._all_b
        epoch, offset = await self._run(
            self._publish_history(
                keys=self._history_keys(topic),
                args=[policy.size, ttl, new_epoch(), channel, head, body],
            )
        )
        return _text(epoch), int(offset)

    async def read_history(self, topic: str, since: Optional[Position]) -> HistorySlice:
        self._check()
        policy = self._policy()
        ttl = 0 if policy.ttl is None else _ms(policy.ttl)
        epoch, offset = since if since is not None else ("", 0)
        answer = await self._run(
            self._read_history(keys=self._history_keys(topic), args=[new_epoch(), ttl, epoch, offset, policy.size])
        )
        entries: List[Tuple[int, bytes]] = []
        for _, fields in reversed(answer[2]):
            values = dict(zip(fields[::2], fields[1::2]))
            entries.append((int(values[b"o"]), values[b"d"]))
        return HistorySlice(_text(answer[0]), int(answer[1]), entries)

    # ------------------------------------------------------------ presence
    async def register(self, client_id: str, node_id: str, ttl: float) -> Optional[str]:
        self._check()
        previous = await self._run(self._redis.set(self._client_key(client_id), node_id, px=_ms(ttl), get=True))
        return previous.decode() if previous is not None else None

    async def unregister(self, client_id: str, node_id: str, groups: Collection[str]) -> None:
        self._check()
        keys = [self._client_key(client_id)] + [self._group_key(g) for g in groups]
        await self._run(self._unregister(keys=keys, args=[node_id, client_id]))

    async def locate(self, client_id: str) -> Optional[str]:
        self._check()
        node = await self._run(self._redis.get(self._client_key(client_id)))
        return node.decode() if node is not None else None

    async def join(self, group: str, client_id: str, node_id: str, ttl: float) -> None:
        self._check()
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._group_key(group), client_id, node_id)
        pipe.pexpire(self._group_key(group), _ms(ttl))
        await self._run(pipe.execute())

    async def leave(self, group: str, client_id: str) -> None:
        self._check()
        await self._run(self._redis.hdel(self._group_key(group), client_id))

    async def heartbeat(self, node_id: str, clients: Mapping[str, Collection[str]], ttl: float) -> None:
        self._check()
        ms = _ms(ttl)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(f"{self.namespace}:n:{node_id}", b"1", px=ms)
        # Every client's record in a few script calls rather than a SET each: at 17,000
        # clients a node spent ~0.3 s of CPU per heartbeat building and parsing the SETs.
        keys = [self._client_key(client_id) for client_id in clients]
        for start in range(0, len(keys), _REFRESH_CHUNK):
            await self._refresh(keys=keys[start : start + _REFRESH_CHUNK], args=[node_id, ms], client=pipe)
        groups: Dict[str, Dict[str, str]] = {}
        for client_id, its_groups in clients.items():
            for group in its_groups:
                groups.setdefault(group, {})[client_id] = node_id
        for group, members in groups.items():
            # A group's hash lives as long as some node with members keeps it alive.
            pipe.hset(self._group_key(group), mapping=members)
            pipe.pexpire(self._group_key(group), ms)
        await self._run(pipe.execute())

    async def _scan(self, match: str, cut: int) -> List[str]:
        found: List[str] = []
        async for key in self._redis.scan_iter(match=match, count=1000):
            found.append(key.decode()[cut:])
        return found

    async def clients(self, group: Optional[str] = None) -> List[str]:
        self._check()
        if group is None:
            prefix = self._client_key("")
            match = _glob_escape(prefix) + "*"
            found: List[str] = await self._run(self._scan(match, len(prefix)))
            return found
        members: Dict[bytes, bytes] = await self._run(self._redis.hgetall(self._group_key(group)))
        if not members:
            return []
        ids = list(members)
        holders = await self._run(self._redis.mget([self._client_key(cid.decode()) for cid in ids]))
        alive: List[bytes] = []
        stale: List[bytes] = []
        for cid, holder in zip(ids, holders):
            (alive if holder is not None and holder == members[cid] else stale).append(cid)
        if stale:
            # Memberships left behind by a crashed node (or a replaced connection).
            await self._run(self._redis.hdel(self._group_key(group), *stale))
        return [cid.decode() for cid in alive]

    # ------------------------------------------------------------ session records
    def _session_key(self, session_id: str) -> str:
        return f"{self.namespace}:s:{session_id}"

    async def session_take(self, session_id: str, node_id: str, ttl: float) -> Optional[str]:
        """Hold the session (field ``o``); the node that held it, ``None`` if Redis does not know it."""
        self._check()
        key = self._session_key(session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hget(key, "o")
        pipe.hset(key, "o", node_id)
        pipe.pexpire(key, _ms(ttl))
        previous, _, _ = await self._run(pipe.execute())
        return _text(previous) if previous is not None else None

    async def session_put(self, session_id: str, answers: Mapping[str, bytes], dropped: List[str], ttl: float) -> None:
        """Record answers (fields ``c:<key>``), forget evicted ones; the hash lives ``ttl`` past its last write."""
        self._check()
        key = self._session_key(session_id)
        pipe = self._redis.pipeline(transaction=False)
        if dropped:
            pipe.hdel(key, *(f"c:{k}" for k in dropped))
        if answers:
            pipe.hset(key, mapping={f"c:{k}": v for k, v in answers.items()})
        pipe.pexpire(key, _ms(ttl))
        await self._run(pipe.execute())

    async def session_get(self, session_id: str, key: str) -> Optional[bytes]:
        self._check()
        answer: Optional[bytes] = await self._run(self._redis.hget(self._session_key(session_id), f"c:{key}"))
        return answer

    async def session_keys(self, session_id: str) -> List[str]:
        self._check()
        fields = await self._run(self._redis.hkeys(self._session_key(session_id)))
        return [_text(f)[2:] for f in fields if f.startswith(b"c:")]


def _broker_error(exc: BaseException) -> BaseException:
    """A connection problem becomes RpcBrokerUnavailableError (cause chained); anything else stays."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, ReplyError)):
        error = unavailable("Redis", exc)
        error.__cause__ = exc
        return error
    return exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
