"""Topics: publish/subscribe on top of streams.

A client subscribes with ``async for event in client.subscribe("prices.btc")``:
on the wire that is the stream method ``$/subscribe`` with params
``{"topics": [...], "on_slow": ...}``, each item ``{"topic", "data", "dropped"}``,
so a JSON-RPC client of any language can subscribe as it consumes any stream.
The server publishes with ``await endpoint.publish("prices.btc", data)``; with a
cluster broker, a publish reaches the subscribers of every node, each once.

Each subscription has a bounded queue (``queue_size``) between the publisher and
the stream (whose own credits bound what is in flight to the subscriber). A
subscriber that cannot keep up meets a declared policy, never unbounded memory:

* ``"disconnect"`` (the default): the connection is closed with 1008 and a reason
  naming the topic;
* ``"drop_oldest"``: the oldest waiting event makes room;
* ``"drop_new"``: the new event is dropped.

Every event carries ``dropped``: how many events this subscription lost so far.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterable, List, Optional, Set, Tuple

import msgspec

from .errors import RemoteValueError
from .logger import get_logger
from .transport import CLOSE_POLICY_VIOLATION
from .watchdog import spawn_background

if TYPE_CHECKING:
    from .channel import RpcChannel

logger = get_logger("topics")

SUBSCRIBE = "$/subscribe"
ON_SLOW = ("disconnect", "drop_oldest", "drop_new")
DEFAULT_TOPIC_QUEUE = 256
#: Topics one subscription may name at most (each costs a set entry).
MAX_TOPICS_PER_SUBSCRIPTION = 100


class TopicEvent(msgspec.Struct, gc=False):
    """One published event as a subscriber sees it."""

    topic: str
    data: Any = None
    #: Events this subscription has lost so far (``drop_oldest`` / ``drop_new``).
    dropped: int = 0


class _Subscription:
    __slots__ = ("channel", "dropped", "kicked", "on_slow", "queue", "queue_size", "waiter")

    def __init__(self, channel: RpcChannel, on_slow: str, queue_size: int) -> None:
        self.channel = channel
        self.on_slow = on_slow
        self.queue_size = queue_size
        self.queue: Deque[Tuple[str, Any]] = deque()
        self.dropped = 0
        self.kicked = False
        self.waiter: Optional[asyncio.Future[None]] = None

    def offer(self, topic: str, data: Any) -> None:
        if self.kicked:
            return
        queue = self.queue
        if len(queue) >= self.queue_size:
            if self.on_slow == "drop_oldest":
                queue.popleft()
                self.dropped += 1
            elif self.on_slow == "drop_new":
                self.dropped += 1
                return
            else:
                self.kicked = True
                reason = f"subscriber too slow on topic {topic!r}"
                logger.warning(
                    "channel %s (peer %s): %s; disconnecting", self.channel.id, self.channel.socket.peer, reason
                )
                spawn_background(asyncio.get_running_loop(), self.channel.close(CLOSE_POLICY_VIOLATION, reason))
                self._wake()
                return
        queue.append((topic, data))
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TopicHub:
    """The subscriptions of one process, by topic; the endpoint has one (``endpoint.topics``)."""

    def __init__(self, queue_size: int = DEFAULT_TOPIC_QUEUE, on_slow: str = "disconnect") -> None:
        if on_slow not in ON_SLOW:
            raise ValueError(f"on_slow must be one of {ON_SLOW}, got {on_slow!r}")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.queue_size = queue_size
        self.on_slow = on_slow
        self._topics: Dict[str, Set[_Subscription]] = {}

    def subscriber_count(self, topic: Optional[str] = None) -> int:
        """Subscriptions to ``topic`` (or to any topic) in this process."""
        if topic is not None:
            return len(self._topics.get(topic, ()))
        return len({sub for subs in self._topics.values() for sub in subs})

    def topics(self) -> List[str]:
        """Topics with at least one subscriber here."""
        return list(self._topics)

    def publish_local(self, topic: str, data: Any) -> int:
        """Offer ``data`` to this process's subscribers of ``topic``; how many there were."""
        subs = self._topics.get(topic)
        if not subs:
            return 0
        for sub in list(subs):
            sub.offer(topic, data)
        return len(subs)

    def subscribe(self, channel: RpcChannel, topics: Iterable[str], on_slow: Optional[str] = None) -> _Events:
        """The producer side of a ``$/subscribe`` stream (run by the channel, paced by credits).

        The subscription is registered here, before the stream's id is
        answered, so that nothing published after the subscriber's ``open()``
        returns can be missed.
        """
        names = list(topics) if not isinstance(topics, str) else [topics]
        if not names or len(names) > MAX_TOPICS_PER_SUBSCRIPTION or not all(isinstance(t, str) for t in names):
            raise RemoteValueError(
                f"Invalid params: topics must be 1 to {MAX_TOPICS_PER_SUBSCRIPTION} strings", code=-32602
            )
        policy = on_slow or self.on_slow
        if policy not in ON_SLOW:
            raise RemoteValueError(f"Invalid params: on_slow must be one of {ON_SLOW}", code=-32602)
        sub = _Subscription(channel, policy, self.queue_size)
        for name in names:
            self._topics.setdefault(name, set()).add(sub)
        return _Events(self, sub, names)

    def _forget(self, sub: _Subscription, names: List[str]) -> None:
        for name in names:
            subs = self._topics.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._topics[name]


class _Events:
    """The events of one subscription, as the async iterator a stream producer drives."""

    __slots__ = ("_closed", "_hub", "_names", "_sub")

    def __init__(self, hub: TopicHub, sub: _Subscription, names: List[str]) -> None:
        self._hub = hub
        self._sub = sub
        self._names = names
        self._closed = False

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Dict[str, Any]:
        sub = self._sub
        while not sub.queue and not sub.kicked and not self._closed:
            sub.waiter = asyncio.get_running_loop().create_future()
            try:
                await sub.waiter
            finally:
                sub.waiter = None
        if sub.kicked or self._closed:
            await self.aclose()
            raise StopAsyncIteration
        topic, data = sub.queue.popleft()
        return {"topic": topic, "data": data, "dropped": sub.dropped}

    async def aclose(self) -> None:
        """End the subscription (also when it never started): it leaves every topic."""
        if not self._closed:
            self._closed = True
            self._hub._forget(self._sub, self._names)
