"""A node is ready before it accepts (issue 23, item 4).

A node joins its cluster (subscribed, presence known) before its first connection
is served, on every broker: a call routed in the first millisecond of a node's life
finds a client held by another node. On NATS presence is soft state that each node
keeps from its peers' announcements, so a node that has only just connected knows
nobody until it has asked its peers; ``Cluster.start()`` completes only once it has.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, List

import pytest

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient, WebSocketRpcEndpoint
from fastwsrpc.cluster import Cluster, LocalBroker, LocalHub, broker_from_url
from fastwsrpc.cluster.base import Broker
from fastwsrpc.server import WebSocketRpcServer

from .brokers import Node, bounded, eventually, nats_server, redis_server  # noqa: F401

MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture(params=["local", "redis", "nats"])
def make_broker(request: Any) -> Callable[[], Broker]:
    """Makes brokers of one cluster (a fresh namespace) on the parametrised engine."""
    kind = request.param
    namespace = f"t{uuid.uuid4().hex[:12]}"
    hub = LocalHub()
    url = ""
    if kind != "local":
        url = request.getfixturevalue(f"{kind}_server").url

    def make() -> Broker:
        return LocalBroker(hub) if kind == "local" else broker_from_url(url, namespace=namespace)

    return make


@pytest.fixture
async def make_node(make_broker: Callable[[], Broker]) -> AsyncIterator[MakeNode]:
    """Makes nodes of one cluster on the parametrised broker; closes them at the end."""
    made: List[Node] = []

    async def make(**options: Any) -> Node:
        # The default heartbeat (5 s): a node must not learn its peers from a heartbeat
        # that happens to come during the test.
        node = Node(Cluster(make_broker(), **options))
        made.append(node)
        return node

    yield make
    for node in made:
        await bounded(node.close())


async def holder_of(make_node: MakeNode, *client_ids: str) -> Node:
    """A node that has been up a while, holding ``client_ids``."""
    b = await make_node()
    for client_id in client_ids:
        await b.connect(client_id)
    return b


async def test_the_first_call_of_a_new_node_reaches_a_client_on_another_node(make_node: MakeNode) -> None:
    """No start, no attach, no wait: the node's very first operation is the routed call."""
    await holder_of(make_node, "bob")
    a = await make_node()
    assert (await bounded(a.cluster.call("bob", "whoami"), 10)).result == "bob"


async def test_a_new_nodes_first_connection_reaches_a_client_on_another_node(make_node: MakeNode) -> None:
    """The node joins at its first attach; the client that just connected calls at once."""
    await holder_of(make_node, "bob")
    a = await make_node()
    await a.connect("alice")
    assert (await bounded(a.cluster.call("bob", "add", [1, 2]), 10)).result == 3
    await a.cluster.notify("bob", "hear", ["hi"])  # notify routes the same way


async def test_start_completes_with_presence_known(make_node: MakeNode) -> None:
    """After ``start()`` the node lists and locates every client held elsewhere, without waiting."""
    ids = [f"c{n}" for n in range(50)]
    await holder_of(make_node, *ids[:25])
    await holder_of(make_node, *ids[25:])
    a = await make_node()
    await bounded(a.cluster.start(), 10)
    assert await a.cluster.clients() == sorted(ids)
    results = await bounded(asyncio.gather(*(a.cluster.call(cid, "whoami") for cid in ids)), 10)
    assert [r.result for r in results] == ids


async def test_start_is_idempotent_and_concurrent_starts_share_one(make_node: MakeNode) -> None:
    await holder_of(make_node, "bob")
    a = await make_node()
    await bounded(asyncio.gather(a.cluster.start(), a.cluster.start(), a.cluster.call("bob", "whoami")), 10)
    await bounded(a.cluster.start(), 10)
    assert (await bounded(a.cluster.call("bob", "whoami"), 10)).result == "bob"


async def test_a_lone_node_starts_at_once(make_node: MakeNode) -> None:
    """Nobody to ask: the start does not wait out a timeout."""
    a = await make_node()
    began = time.monotonic()
    await bounded(a.cluster.start(), 10)
    assert time.monotonic() - began < 1.0
    await a.connect("alice")
    assert await a.cluster.clients() == ["alice"]


async def test_a_start_does_not_wait_for_a_node_that_left(make_node: MakeNode) -> None:
    """A peer that closed (or crashed: still named by the others) does not hold a start up to its timeout."""
    await holder_of(make_node, "bob")
    gone = await holder_of(make_node, "carol")
    c = await make_node()
    await bounded(c.cluster.start(), 10)  # c knows gone's node; now it closes
    await gone.close()
    a = await make_node()
    began = time.monotonic()
    await bounded(a.cluster.start(), 10)
    assert time.monotonic() - began < 1.0
    assert (await bounded(a.cluster.call("bob", "whoami"), 10)).result == "bob"


async def test_nodes_starting_together_do_not_wait_for_each_other(make_node: MakeNode) -> None:
    """Each may name the others before they answer syncs: none waits out its timeout."""
    await holder_of(make_node, "bob")
    nodes = [await make_node() for _ in range(4)]
    began = time.monotonic()
    await bounded(asyncio.gather(*(node.cluster.start() for node in nodes)), 15)
    assert time.monotonic() - began < 1.5  # sync_timeout is 2 s
    for node in nodes:
        assert (await bounded(node.cluster.call("bob", "whoami"), 10)).result == "bob"
    for index, node in enumerate(nodes):
        await node.connect(f"n{index}")
    # (A client that connects elsewhere reaches a node's view of presence as a message: not in the same instant.)
    for node in nodes:
        await eventually(lambda node=node: _lists(node, [f"n{i}" for i in range(4)]))
    for node in nodes:
        results = await bounded(asyncio.gather(*(node.cluster.call(f"n{i}", "whoami") for i in range(4))), 10)
        assert [r.result for r in results] == [f"n{i}" for i in range(4)]


async def _lists(node: Node, client_ids: List[str]) -> bool:
    return set(client_ids) <= set(await node.cluster.clients())


# ------------------------------------------------------------------ the servers start it before they accept
class Relay(RpcMethodsBase):
    """A server's methods: a call from its client routed to another client, by id."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster: Any = None

    async def relay(self, client_id: str, method: str) -> Any:
        return (await self.cluster.call(client_id, method)).result


async def test_the_native_server_joins_before_it_accepts(
    make_node: MakeNode, make_broker: Callable[[], Broker]
) -> None:
    """The first connection of a new server calls, through it, a client held by another node."""
    await holder_of(make_node, "bob")
    relay = Relay()
    server = WebSocketRpcServer(relay, broker=make_broker())
    relay.cluster = server.cluster
    try:
        async with server.listen("127.0.0.1", 0, path="/ws/{client_id}"):
            assert server.cluster.started  # before any connection
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/alice"
            async with WebSocketRpcClient(url) as alice:
                assert (await bounded(alice.other.relay(client_id="bob", method="whoami"), 10)).result == "bob"
    finally:
        await bounded(server.cluster.close())


async def test_a_service_start_joins_the_cluster(make_node: MakeNode, make_broker: Callable[[], Broker]) -> None:
    """What a FastAPI app awaits in its lifespan (``endpoint.service.start()``)."""
    await holder_of(make_node, "bob")
    endpoint = WebSocketRpcEndpoint(RpcMethodsBase(), broker=make_broker())
    try:
        assert not endpoint.service.cluster.started
        await bounded(endpoint.service.start(), 10)
        assert endpoint.service.cluster.started
        assert await endpoint.cluster.clients() == ["bob"]
    finally:
        await bounded(endpoint.cluster.close())


# ------------------------------------------------------------------ NATS: peers that do not answer
async def _raw_nats(url: str) -> Any:
    import nats

    return await nats.connect(url)


async def test_nats_a_start_does_not_wait_for_a_crashed_node(nats_server: Any) -> None:  # noqa: F811
    """A node that crashed is still named by its peers until its presence expires; asked on
    its own subject, the server says nobody listens there, and the start goes on at once."""
    from fastwsrpc.cluster import NatsBroker

    namespace = f"t{uuid.uuid4().hex[:12]}"
    nodes: List[Node] = []

    def make() -> Node:
        node = Node(Cluster(NatsBroker(nats_server.url, namespace=namespace)))
        nodes.append(node)
        return node

    raw = await _raw_nats(nats_server.url)
    try:
        b = make()
        await b.connect("bob")
        # The last heartbeat of a node that then crashed (no "bye"): b now knows it for 30 s.
        await raw.publish(f"{namespace}.presence", b'{"op":"state","n":"crashed","ttl":30,"cs":{"ghost":[]}}')
        await raw.flush()
        await eventually(lambda: _lists(b, ["bob", "ghost"]))
        a = make()
        began = time.monotonic()
        await bounded(a.cluster.start(), 10)
        assert time.monotonic() - began < 1.0  # sync_timeout is 2 s
        assert (await bounded(a.cluster.call("bob", "whoami"), 10)).result == "bob"
    finally:
        await raw.close()
        for node in nodes:
            await bounded(node.close())


async def test_nats_a_start_waits_for_a_silent_peer_at_most_sync_timeout(nats_server: Any) -> None:  # noqa: F811
    """A node that is alive but does not answer syncs (an older version, say) costs a start
    ``sync_timeout`` at most; what the others answered is known, and the node serves."""
    from fastwsrpc.cluster import NatsBroker

    namespace = f"t{uuid.uuid4().hex[:12]}"
    nodes: List[Node] = []

    def make() -> Node:
        node = Node(Cluster(NatsBroker(nats_server.url, namespace=namespace, sync_timeout=0.5)))
        nodes.append(node)
        return node

    raw = await _raw_nats(nats_server.url)
    try:
        await raw.subscribe(f"{namespace}.sync.silent", cb=_ignore)  # listens, never answers
        b = make()
        await b.connect("bob")
        await raw.publish(f"{namespace}.presence", b'{"op":"state","n":"silent","ttl":30,"cs":{}}')
        await raw.flush()
        await eventually(lambda: "silent" in b.cluster.broker._node_seen)  # type: ignore[attr-defined]
        a = make()
        began = time.monotonic()
        await bounded(a.cluster.start(), 10)
        assert 0.4 < time.monotonic() - began < 2.0
        assert (await bounded(a.cluster.call("bob", "whoami"), 10)).result == "bob"
    finally:
        await raw.close()
        for node in nodes:
            await bounded(node.close())


async def _ignore(msg: Any) -> None:
    pass
