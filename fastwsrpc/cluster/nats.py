"""NatsBroker: the cluster on NATS (nats-py; ``pip install fastwsrpc[nats]``).

Subjects, under a namespace (default ``fastwsrpc``):

* ``{ns}.node.{node_id}``: one subject per node. A routed call is a NATS request on it
  (a message with a reply subject, ``{ns}.reply.{node_id}.{n}``, which the caller's
  one wildcard subscription receives); a message without reply subject is one-way.
  When nobody is subscribed, the server itself answers a request with the status
  "503 no responders": a call to a dead node fails at once.
* ``{ns}.all``: broadcasts.
* ``{ns}.presence``: who is connected where, as soft state. Plain core NATS keeps
  no data, and we do not require JetStream, so each node publishes its changes (a
  client added, removed, joined a group) as they happen and its full state every
  heartbeat; every node keeps the resulting view, each entry with its own expiry.
  A dead node stops refreshing its entries and they expire within the TTL. A node
  that connects (or reconnects) asks the others to publish their state at once.
  Lookups are then local: no round trip before a routed call.

When the connection drops, every request waiting for a reply fails with
``RpcBrokerUnavailableError`` (its reply could be lost); the broker reconnects with
tenacity (exponential backoff with jitter), subscribes again and the cluster
re-announces its clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Collection, Dict, List, Mapping, Optional, Set

import msgspec

from ..errors import RpcBrokerUnavailableError, RpcMessageTooLargeError, RpcTimeoutError
from .base import (
    Head,
    MessageHandler,
    NotifyHandler,
    PendingReplies,
    RequestHandler,
    RpcNodeGoneError,
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


class _Gossip(msgspec.Struct, omit_defaults=True, gc=False):
    """A presence message: ``op`` is state, add, del, join, leave, sync or bye; ``n`` the node."""

    op: str
    n: str
    ttl: float = 0.0
    c: str = ""
    g: str = ""
    cs: Optional[Dict[str, List[str]]] = None


_gossip_encoder = msgspec.json.Encoder()
_gossip_decoder = msgspec.json.Decoder(_Gossip)


class _Entry:
    __slots__ = ("groups", "node", "until")

    def __init__(self, node: str, until: float, groups: Set[str]) -> None:
        self.node = node
        self.until = until
        self.groups = groups


def _import_nats() -> Any:
    try:
        import nats
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("NatsBroker needs the nats-py package (2.6 or later): pip install fastwsrpc[nats]") from exc
    return nats


class NatsBroker:
    """A :class:`~fastwsrpc.cluster.Broker` on NATS: ``NatsBroker("nats://localhost:4222")``.

    ``namespace`` separates clusters sharing one NATS (it must be a valid subject
    token). Other keywords go to ``nats.connect`` (credentials, TLS, ...).
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        namespace: str = "fastwsrpc",
        connect_timeout: float = 2.0,
        max_reconnect_wait: float = 2.0,
        **nats_kwargs: Any,
    ) -> None:
        if not namespace or any(ch in namespace for ch in " *>\t\r\n"):
            raise ValueError(f"namespace must be a valid NATS subject token, got {namespace!r}")
        self._nats = _import_nats()
        self.url = url
        self.namespace = namespace
        self.connect_timeout = connect_timeout
        self.max_reconnect_wait = max_reconnect_wait
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
        self._on_request: Optional[RequestHandler] = None
        self._on_message: Optional[MessageHandler] = None
        self._on_announce: Optional[NotifyHandler] = None

    def __repr__(self) -> str:
        return f"NatsBroker({self.url!r}, namespace={self.namespace!r})"

    def _node_subject(self, node_id: str) -> str:
        return f"{self.namespace}.node.{node_id}"

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
            await asyncio.wait_for(self._connect(), 2 * self.connect_timeout + 1)
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
        try:
            await nc.subscribe(self._node_subject(self.node_id), cb=self._on_node_msg)
            await nc.subscribe(f"{self.namespace}.all", cb=self._on_all_msg)
            await nc.subscribe(f"{self.namespace}.presence", cb=self._on_presence_msg)
            await nc.subscribe(self._reply_prefix + "*", cb=self._on_reply_msg)
            await nc.flush(timeout=self.connect_timeout)
        except BaseException:
            await _quiet_close(nc)
            raise
        self._nc = nc
        self._generation = generation
        lost.clear()
        self._connected = True
        await self._gossip(_Gossip(op="sync", n=self.node_id))
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

    # ------------------------------------------------------------ messages
    async def _on_node_msg(self, msg: Any) -> None:
        assert self._on_message is not None
        if msg.reply:
            spawn(self._tasks, self._serve(msg.reply, msg.data))
        else:
            self._on_message(msg.data)

    async def _on_all_msg(self, msg: Any) -> None:
        assert self._on_message is not None
        self._on_message(msg.data)

    async def _on_reply_msg(self, msg: Any) -> None:
        try:
            rid = int(msg.subject[len(self._reply_prefix) :])
        except ValueError:
            return
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            self._pending.fail(
                rid, RpcNodeGoneError("the node is gone (NATS: no responders on its subject)", delivered=False)
            )
        else:
            self._pending.resolve(rid, msg.data)

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
            await self._publish(reply_to, reply)
        except Exception as exc:
            logger.debug("cluster: reply on %s not sent: %s", reply_to, exc)

    async def request(self, node_id: str, data: bytes, timeout: Optional[float]) -> bytes:
        self._check()
        rid, future = self._pending.add(node_id)
        try:
            await self._publish(self._node_subject(node_id), data, reply=f"{self._reply_prefix}{rid}")
        except BaseException:
            self._pending.discard(rid)
            raise
        return await self._pending.wait(rid, future, timeout, node_id)

    async def send(self, node_id: str, data: bytes) -> bool:
        await self._publish(self._node_subject(node_id), data)
        return True

    async def publish(self, data: bytes) -> None:
        await self._publish(f"{self.namespace}.all", data)

    async def check_peers(self) -> None:
        """Probe each node that calls wait on: the server answers "no responders" for a dead one."""
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
        chunk: Dict[str, List[str]] = {}
        size = 0
        items = list(clients.items())
        for index, (cid, groups) in enumerate(items):
            chunk[cid] = list(groups)
            size += len(cid) + sum(len(g) + 3 for g in groups) + 6
            if size >= _STATE_CHUNK_BYTES or index == len(items) - 1:
                await self._send_state(node_id, chunk, ttl)
                chunk, size = {}, 0
        if not items:
            await self._send_state(node_id, {}, ttl)

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


async def _quiet_close(nc: Any) -> None:
    try:
        await nc.close()
    except Exception:
        pass
