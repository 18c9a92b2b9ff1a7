"""Topics (issue 13): publish/subscribe on streams, slow-subscriber policies, across nodes."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

from fastwsrpc import RpcChannel, RpcMethodsBase, RpcSettings
from fastwsrpc.cluster import Cluster, LocalBroker, LocalHub
from fastwsrpc.testing import memory_pair, until
from fastwsrpc.topics import TopicEvent, TopicHub


class Pair:
    """A server channel with a topic hub and a client channel, on a memory pair."""

    def __init__(self, hub: TopicHub, speedups: Any) -> None:
        a, b = memory_pair()
        self.server = RpcChannel(RpcMethodsBase(), a, settings=RpcSettings(), speedups=speedups, topics=hub)
        self.client = RpcChannel(RpcMethodsBase(), b, settings=RpcSettings(), speedups=speedups)
        self.readers = [asyncio.ensure_future(self.server.run()), asyncio.ensure_future(self.client.run())]

    async def close(self) -> None:
        await self.client.close()
        await self.server.close()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def test_subscribe_publish_and_unsubscribe(speedups: Any) -> None:
    hub = TopicHub()
    pair = Pair(hub, speedups)
    events = pair.client.subscribe("prices.btc", "prices.eth")
    await events.open()
    await until(lambda: hub.subscriber_count("prices.btc") == 1)
    hub.publish_local("prices.btc", {"usd": 1})
    hub.publish_local("other", "nobody listens")
    hub.publish_local("prices.eth", 2)
    assert await events.next() == TopicEvent("prices.btc", {"usd": 1}, 0)
    assert await events.next() == TopicEvent("prices.eth", 2, 0)
    await events.aclose()
    await until(lambda: hub.subscriber_count() == 0 and pair.server.stream_count == 0)
    await pair.close()


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_new"])
async def test_a_slow_subscriber_loses_events_and_sees_how_many(policy: str, speedups: Any) -> None:
    hub = TopicHub(queue_size=4)
    pair = Pair(hub, speedups)
    events = pair.client.subscribe("t", on_slow=policy, buffer=2)
    await events.open()
    await until(lambda: hub.subscriber_count("t") == 1)
    for i in range(2):  # these fill the subscriber's window (2 credits)
        hub.publish_local("t", i)
    await until(lambda: len(events._items) == 2)
    for i in range(2, 20):  # the hub's queue holds 4 of these; the policy drops the other 14
        hub.publish_local("t", i)
    got = [await asyncio.wait_for(events.next(), 30) for _ in range(6)]
    assert [e.data for e in got[:2]] == [0, 1]
    rest = [e.data for e in got[2:]]
    assert rest == ([16, 17, 18, 19] if policy == "drop_oldest" else [2, 3, 4, 5])
    assert got[-1].dropped == 14
    await events.aclose()
    await pair.close()


async def test_a_slow_subscriber_is_disconnected_by_default(speedups: Any) -> None:
    hub = TopicHub(queue_size=4)
    pair = Pair(hub, speedups)
    events = pair.client.subscribe("t", buffer=2)
    await events.open()
    await until(lambda: hub.subscriber_count("t") == 1)
    for i in range(50):
        hub.publish_local("t", i)
    await asyncio.wait_for(pair.server.wait_until_closed(), 30)
    assert "too slow on topic 't'" in pair.server.close_reason
    assert pair.server.socket.close_code == 1008  # type: ignore[attr-defined]
    await until(lambda: hub.subscriber_count() == 0)
    await pair.close()


async def test_a_thousand_subscribers_across_two_nodes_get_each_event_once(speedups: Any) -> None:
    shared = LocalHub()
    nodes = [Cluster(LocalBroker(shared)), Cluster(LocalBroker(shared))]
    hubs = [TopicHub(), TopicHub()]
    for node, hub in zip(nodes, hubs):
        node.on_topic = hub.publish_local
        await node.clients()  # joins the cluster (an endpoint's node does so with its first connection)
    pairs = [Pair(hubs[k % 2], speedups) for k in range(1000)]
    streams = [pair.client.subscribe("news") for pair in pairs]
    await asyncio.gather(*(s.open() for s in streams))
    await until(lambda: hubs[0].subscriber_count("news") == 500 and hubs[1].subscriber_count("news") == 500)
    await nodes[0].publish_topic("news", {"n": 1})  # one publish, on one node
    await nodes[1].publish_topic("news", {"n": 2})
    got: List[Any] = await asyncio.wait_for(asyncio.gather(*(s.next() for s in streams)), 60)
    got2: List[Any] = await asyncio.wait_for(asyncio.gather(*(s.next() for s in streams)), 60)
    assert all(e.data == {"n": 1} for e in got) and all(e.data == {"n": 2} for e in got2)
    assert all(not s._items for s in streams)  # exactly once each
    for s in streams:
        await s.aclose()
    await asyncio.gather(*(pair.close() for pair in pairs))
    for node in nodes:
        await node.close()
