"""The broker going away under two in-process nodes, on a real Redis and a real NATS.

Calls that need the broker fail fast with RpcBrokerUnavailableError, calls that were
waiting for a reply through it fail too (their reply could be lost), calls to
clients of the same node keep working, and once the broker is back each node
reconnects by itself (tenacity backoff) and re-announces its clients, including
one that connected during the outage.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator, List

import pytest

from fastwsrpc.cluster import Cluster, broker_from_url
from fastwsrpc.errors import RpcBrokerUnavailableError, RpcClientNotFoundError

from .brokers import BrokerServer, Node, bounded, eventually, own_broker  # noqa: F401

pytestmark = pytest.mark.parametrize("own_broker", ["redis", "nats"], indirect=True)


@pytest.fixture
async def two_nodes(own_broker: BrokerServer) -> AsyncIterator[List[Node]]:  # noqa: F811
    namespace = f"t{uuid.uuid4().hex[:12]}"
    nodes = [
        Node(Cluster(broker_from_url(own_broker.url, namespace=namespace), presence_ttl=3.0, heartbeat_interval=0.2))
        for _ in range(2)
    ]
    yield nodes
    for node in nodes:
        await bounded(node.close())


async def _answers(node: Node, client_id: str) -> bool:
    try:
        return bool((await bounded(node.cluster.call(client_id, "whoami", timeout=2), 5)).result == client_id)
    except (RpcBrokerUnavailableError, RpcClientNotFoundError):
        return False


async def test_broker_restart(own_broker: BrokerServer, two_nodes: List[Node]) -> None:  # noqa: F811
    a, b = two_nodes
    await a.connect("alice")
    await b.connect("bob")
    await eventually(lambda: _answers(a, "bob"))
    await eventually(lambda: _answers(b, "alice"))
    waiting = asyncio.ensure_future(a.cluster.call("bob", "sleep", {"seconds": 60}))
    await eventually(lambda: b.cluster._serving)

    own_broker.stop()
    with pytest.raises(RpcBrokerUnavailableError):
        await bounded(waiting)  # its reply could never come: it fails, it does not hang
    await eventually(lambda: not a.cluster.broker.available and not b.cluster.broker.available)
    with pytest.raises(RpcBrokerUnavailableError):
        await bounded(a.cluster.call("bob", "whoami"), 5)
    with pytest.raises(RpcBrokerUnavailableError):
        await bounded(a.cluster.clients(), 5)
    with pytest.raises(RpcBrokerUnavailableError):
        await bounded(b.cluster.broadcast("hear", ["x"]), 5)
    # Same-node calls need no broker.
    assert (await bounded(a.cluster.call("alice", "whoami"))).result == "alice"
    assert (await bounded(b.cluster.call("bob", "add", [1, 1]))).result == 2
    carol = await b.connect("carol")  # attached while the broker is down: served locally now
    assert (await bounded(b.cluster.call("carol", "whoami"))).result == "carol"

    own_broker.start()
    await eventually(lambda: _answers(a, "bob"), timeout=20)
    await eventually(lambda: _answers(a, "carol"))  # re-announced after the outage
    await eventually(lambda: _answers(b, "alice"))
    assert set(await a.cluster.clients()) == {"alice", "bob", "carol"}
    await bounded(a.cluster.broadcast("hear", ["back"]))
    await eventually(lambda: carol.log == ["back"])


async def test_a_node_starting_while_the_broker_is_down_joins_later(
    own_broker: BrokerServer,  # noqa: F811
    two_nodes: List[Node],
) -> None:
    a, b = two_nodes
    own_broker.stop()
    await a.connect("alice")  # the first use starts the cluster: it must not fail or hang
    assert (await bounded(a.cluster.call("alice", "whoami"))).result == "alice"
    with pytest.raises(RpcBrokerUnavailableError):
        await bounded(a.cluster.clients(), 5)
    own_broker.start()
    await b.connect("bob")
    await eventually(lambda: _answers(b, "alice"), timeout=20)
    await eventually(lambda: _answers(a, "bob"))
