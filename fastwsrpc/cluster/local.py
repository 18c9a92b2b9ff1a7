"""LocalBroker: the cluster in one process, with no server to run.

It is the default, so ``endpoint.cluster.call(client_id, ...)`` works the same on a
single server as on many. Several :class:`LocalBroker` objects sharing one
:class:`LocalHub` behave as separate nodes: that is how the cluster's own tests run
every API test without Redis or NATS, and how two endpoints in one process can reach
each other's clients.

Nothing is serialised beyond what the cluster already does (messages are the same
bytes as on Redis or NATS), so a test that passes here exercises the same code paths.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Collection, Dict, List, Mapping, Optional, Set, Tuple

from ..errors import RpcBrokerUnavailableError, RpcTimeoutError
from ..topics import HistoryPolicy, HistorySlice, MemoryHistory, Position
from .base import Head, MessageHandler, NotifyHandler, RequestHandler, RpcNodeGoneError, join_frame, spawn

logger = logging.getLogger("fastwsrpc.cluster")

__all__ = ["LocalBroker", "LocalHub"]

#: Expired session records are swept, this many at a time, once there are twice as many records.
_SESSION_SWEEP = 10_000


class _Node:
    __slots__ = ("on_message", "on_request", "tasks")

    def __init__(self, on_request: RequestHandler, on_message: MessageHandler) -> None:
        self.on_request = on_request
        self.on_message = on_message
        self.tasks: Set[asyncio.Task[Any]] = set()


class LocalHub:
    """The shared state of in-process nodes: who listens, who is connected where, groups,
    and topic history (one history for all its nodes, as Redis or NATS would hold it;
    a new hub, as after a restart, has new epochs)."""

    _named: Dict[str, LocalHub] = {}

    def __init__(self) -> None:
        self.nodes: Dict[str, _Node] = {}
        self.presence: Dict[str, Tuple[str, float]] = {}
        self.groups: Dict[str, Dict[str, str]] = {}
        self.history = MemoryHistory()
        #: Session records: ``session id -> (holder, answers by key, expiry)`` (see fastwsrpc/sessions.py).
        self.sessions: Dict[str, Tuple[str, Dict[str, bytes], float]] = {}
        #: The nodes watching each topic (see :meth:`LocalBroker.watch_topic`).
        self.watchers: Dict[str, Set[str]] = {}

    @classmethod
    def named(cls, name: str) -> LocalHub:
        """One hub per name in this process (``memory://name``), made on first use."""
        hub = cls._named.get(name)
        if hub is None:
            hub = cls._named[name] = cls()
        return hub

    def holder(self, client_id: str, now: float) -> Optional[str]:
        entry = self.presence.get(client_id)
        if entry is None:
            return None
        if entry[1] <= now:
            del self.presence[client_id]
            return None
        return entry[0]


class LocalBroker:
    """An in-process :class:`~fastwsrpc.cluster.Broker`; give several the same ``hub``
    to have several nodes in one process (each ``LocalBroker()`` alone is a one-node
    cluster)."""

    def __init__(self, hub: Optional[LocalHub] = None) -> None:
        self.hub = hub if hub is not None else LocalHub()
        #: A hub of its own: no other node can resume this node's sessions, so none are recorded.
        self.private = hub is None
        self.node_id = ""
        self._started = False
        self._history: Optional[HistoryPolicy] = None
        self._routing = False
        #: Topics this node watches (kept here too, for a watch made before start).
        self._watched: Set[str] = set()

    def __repr__(self) -> str:
        return f"LocalBroker(node={self.node_id or None})"

    @property
    def available(self) -> bool:
        return self._started

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _check(self) -> None:
        if not self._started:
            raise RpcBrokerUnavailableError("the local broker is not started (or closed)")

    async def start(
        self, node_id: str, on_request: RequestHandler, on_message: MessageHandler, on_announce: NotifyHandler
    ) -> None:
        self.node_id = node_id
        self.hub.nodes[node_id] = _Node(on_request, on_message)
        for topic in self._watched:
            self.hub.watchers.setdefault(topic, set()).add(node_id)
        self._started = True
        on_announce()

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        for topic in self._watched:
            self._forget_watch(topic)
        node = self.hub.nodes.pop(self.node_id, None)
        for client_id, (holder, _) in list(self.hub.presence.items()):
            if holder == self.node_id:
                del self.hub.presence[client_id]
        if node is not None:
            # Requests this node was serving: their callers see RpcNodeGoneError.
            for task in list(node.tasks):
                task.cancel()

    async def request(self, node_id: str, data: bytes, timeout: Optional[float]) -> bytes:
        self._check()
        node = self.hub.nodes.get(node_id)
        if node is None:
            raise RpcNodeGoneError(f"node {node_id} is gone", delivered=False)
        task = spawn(node.tasks, _serve(node.on_request, data))
        try:
            # asyncio.wait, not wait_for: the task must outlive a timeout so that
            # we can tell "timed out" from "the node stopped" (the task cancelled).
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            raise RpcTimeoutError(f"no reply from node {node_id} within {timeout} s")
        if task.cancelled():
            raise RpcNodeGoneError(f"node {node_id} stopped before it answered")
        reply: bytes = task.result()
        return reply

    async def send(self, node_id: str, data: bytes) -> bool:
        self._check()
        node = self.hub.nodes.get(node_id)
        if node is None:
            return False
        node.on_message(data)
        return True

    async def publish(self, data: bytes) -> None:
        self._check()
        for node in list(self.hub.nodes.values()):
            node.on_message(data)

    # ------------------------------------------------------------ topics by topic
    def route_topics(self, on: bool) -> None:
        self._routing = on

    def _topic_nodes(self, topic: str) -> List[_Node]:
        """The nodes a topic message goes to: its watchers while routing, else every node."""
        if not self._routing:
            return list(self.hub.nodes.values())
        nodes = self.hub.nodes
        return [nodes[n] for n in self.hub.watchers.get(topic, ()) if n in nodes]

    async def publish_topic(self, topic: str, data: bytes) -> None:
        self._check()
        for node in self._topic_nodes(topic):
            node.on_message(data)

    def watch_topic(self, topic: str) -> Optional[Awaitable[None]]:
        """In memory, a watch takes effect at once: nothing to wait for."""
        self._watched.add(topic)
        if self._started:
            self.hub.watchers.setdefault(topic, set()).add(self.node_id)
        return None

    def unwatch_topic(self, topic: str) -> None:
        """At once too: a topic watched again is delivered from that moment, so nothing is lost."""
        self._watched.discard(topic)
        if self._started:
            self._forget_watch(topic)

    def _forget_watch(self, topic: str) -> None:
        watchers = self.hub.watchers.get(topic)
        if watchers is not None:
            watchers.discard(self.node_id)
            if not watchers:
                del self.hub.watchers[topic]

    def enable_history(self, policy: HistoryPolicy) -> None:
        self._history = policy

    def _policy(self) -> HistoryPolicy:
        if self._history is None:
            raise RuntimeError("topic history is not enabled on this broker (see Cluster.enable_topic_history)")
        return self._history

    async def publish_history(self, topic: str, body: bytes) -> Position:
        """Number and keep the publication, then hand it to every node (to the topic's
        watchers, routed), in the same step: nothing can come between, so every node sees
        a topic's offsets in order."""
        self._check()
        epoch, offset = self.hub.history.append(topic, body, self._policy(), self._now())
        frame = join_frame(Head(op="topic", g=topic, e=epoch, o=offset), body)
        for node in self._topic_nodes(topic):
            node.on_message(frame)
        return epoch, offset

    async def read_history(self, topic: str, since: Optional[Position]) -> HistorySlice:
        self._check()
        return self.hub.history.read(topic, since, self._policy(), self._now())

    # ------------------------------------------------------------ session records
    def _record(self, session_id: str) -> Optional[Tuple[str, Dict[str, bytes], float]]:
        record = self.hub.sessions.get(session_id)
        if record is not None and record[2] <= self._now():
            del self.hub.sessions[session_id]
            return None
        return record

    async def session_take(self, session_id: str, node_id: str, ttl: float) -> Optional[str]:
        self._check()
        record = self._record(session_id)
        answers: Dict[str, bytes] = record[1] if record is not None else {}
        self.hub.sessions[session_id] = (node_id, answers, self._now() + ttl)
        if len(self.hub.sessions) > 2 * _SESSION_SWEEP:  # expired records of sessions nobody resumed
            for key in [k for k, r in self.hub.sessions.items() if r[2] <= self._now()][:_SESSION_SWEEP]:
                del self.hub.sessions[key]
        return record[0] if record is not None else None

    async def session_put(self, session_id: str, answers: Mapping[str, bytes], dropped: List[str], ttl: float) -> None:
        self._check()
        record = self._record(session_id)
        holder, kept = (record[0], record[1]) if record is not None else (self.node_id, {})
        for key in dropped:
            kept.pop(key, None)
        kept.update(answers)
        self.hub.sessions[session_id] = (holder, kept, self._now() + ttl)

    async def session_get(self, session_id: str, key: str) -> Optional[bytes]:
        self._check()
        record = self._record(session_id)
        return record[1].get(key) if record is not None else None

    async def session_keys(self, session_id: str) -> List[str]:
        self._check()
        record = self._record(session_id)
        return list(record[1]) if record is not None else []

    async def register(self, client_id: str, node_id: str, ttl: float) -> Optional[str]:
        self._check()
        previous = self.hub.holder(client_id, self._now())
        self.hub.presence[client_id] = (node_id, self._now() + ttl)
        return previous

    async def unregister(self, client_id: str, node_id: str, groups: Collection[str]) -> None:
        self._check()
        entry = self.hub.presence.get(client_id)
        if entry is not None and entry[0] == node_id:
            del self.hub.presence[client_id]
        for group in groups:
            members = self.hub.groups.get(group)
            if members is not None and members.get(client_id) == node_id:
                del members[client_id]

    async def locate(self, client_id: str) -> Optional[str]:
        self._check()
        return self.hub.holder(client_id, self._now())

    async def join(self, group: str, client_id: str, node_id: str, ttl: float) -> None:
        self._check()
        self.hub.groups.setdefault(group, {})[client_id] = node_id

    async def leave(self, group: str, client_id: str) -> None:
        self._check()
        self.hub.groups.get(group, {}).pop(client_id, None)

    async def heartbeat(self, node_id: str, clients: Mapping[str, Collection[str]], ttl: float) -> None:
        self._check()
        until = self._now() + ttl
        for client_id, groups in clients.items():
            self.hub.presence[client_id] = (node_id, until)
            for group in groups:
                self.hub.groups.setdefault(group, {})[client_id] = node_id

    async def clients(self, group: Optional[str] = None) -> List[str]:
        self._check()
        now = self._now()
        if group is None:
            return [cid for cid in list(self.hub.presence) if self.hub.holder(cid, now) is not None]
        members = self.hub.groups.get(group, {})
        # A membership counts only while its holder still holds the client.
        return [cid for cid, node in members.items() if self.hub.holder(cid, now) == node]

    async def check_peers(self) -> None:
        """Nothing to do: a node that stops fails the requests it was serving itself."""


async def _serve(on_request: RequestHandler, data: bytes) -> bytes:
    try:
        return await on_request(data)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the cluster's handler answers errors itself; this is a bug guard
        logger.exception("cluster request handler failed")
        return join_frame(Head(s="error", m=f"{type(exc).__name__}: {exc}"))
