"""Topics routed by topic (``Cluster.per_topic``): a publication reaches the nodes that watch it.

The same tests on each broker (in-process, Redis, NATS), without and with topic
history. Every node here records two things: what its broker handed it (``raw``:
every ``topic`` message that reached the node at all) and what the cluster passed to
``on_topic``. Ordering is what makes "never" testable without waiting for a time:
one node's publications reach another node in the order they were published, so once
a later publication has arrived, an earlier one that did not will not.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from types import SimpleNamespace
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple

import pytest

from fastwsrpc.cluster import Cluster, LocalBroker, LocalHub, broker_from_url
from fastwsrpc.cluster.base import Broker, split_frame
from fastwsrpc.errors import RpcBrokerUnavailableError
from fastwsrpc.topics import HistoryPolicy, TopicHub

from .brokers import BrokerServer, bounded, eventually, nats_server, own_broker, redis_server  # noqa: F401

#: Topic names that are not subject tokens, globs, empty, non-ASCII: any string is a topic.
ODD_TOPICS = ["", "a b", "x.>", "*", "a..b", "~.YQ", "prix/€", "tab\there", "[x]?", "a.b.c"]


class TopicNode:
    """A cluster node that records the topic messages its broker delivers and those given to ``on_topic``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.raw: List[str] = []
        self.got: List[Tuple[str, Any]] = []
        deliver = cluster._on_message

        def spy(data: bytes) -> None:
            head, _ = split_frame(data)
            if head.op == "topic" and head.g is not None:
                self.raw.append(head.g)
            deliver(data)

        # Before start: the broker is given this as the node's message handler.
        cluster._on_message = spy  # type: ignore[method-assign]
        cluster.on_topic = lambda topic, data, *position: self.got.append((topic, data))

    def data_of(self, topic: str) -> List[Any]:
        return [data for t, data in self.got if t == topic]

    async def watch(self, topic: str) -> None:
        """Watch ``topic`` and wait as the TopicHub will: until the broker delivers it here."""
        waiter = self.cluster.watch_topic(topic)
        if waiter is not None:
            await bounded(waiter)


MakeNode = Callable[..., Awaitable[TopicNode]]


@pytest.fixture(params=["local", "redis", "nats"])
def kind(request: Any) -> str:
    return str(request.param)


@pytest.fixture(params=[False, True], ids=["live", "history"])
def history(request: Any) -> bool:
    return bool(request.param)


@pytest.fixture
async def make_node(request: Any, kind: str, history: bool) -> AsyncIterator[MakeNode]:
    """Makes nodes of one cluster on the parametrised broker, topics routed; closes them at the end."""
    namespace = f"tt{uuid.uuid4().hex[:12]}"
    hub = LocalHub()
    url = "" if kind == "local" else request.getfixturevalue(f"{kind}_server").url
    made: List[TopicNode] = []

    async def make(per_topic: bool = True, **broker_options: Any) -> TopicNode:
        if kind == "local":
            broker: Broker = LocalBroker(hub)
        else:
            if kind == "nats":
                broker_options.setdefault("history_storage", "memory")
            broker = broker_from_url(url, namespace=namespace, **broker_options)
        cluster = Cluster(broker, presence_ttl=3.0, heartbeat_interval=0.2)
        if history:
            cluster.enable_topic_history(HistoryPolicy(100))
        cluster.per_topic = per_topic
        node = TopicNode(cluster)
        made.append(node)
        await cluster.start()
        return node

    yield make
    for node in made:
        await bounded(node.cluster.close())


async def test_a_publication_reaches_only_the_nodes_watching_its_topic(make_node: MakeNode) -> None:
    a, b, c = await make_node(), await make_node(), await make_node()
    await b.watch("news")
    await c.watch("marker")
    await a.cluster.publish_topic("sports", 1)
    await a.cluster.publish_topic("news", 2)
    await a.cluster.publish_topic("marker", 3)
    await bounded(eventually(lambda: b.data_of("news") == [2] and c.data_of("marker") == [3]))
    await b.watch("marker")  # B hears the marker from now on: everything before it has reached B
    await a.cluster.publish_topic("marker", 4)
    await bounded(eventually(lambda: b.data_of("marker") == [4]))
    assert b.raw == ["news", "marker"] and [t for t, _ in b.got] == ["news", "marker"]
    assert c.raw == ["marker", "marker"]
    assert a.raw == []  # the publisher watches nothing: its own publications do not come back


async def test_nothing_published_after_a_watch_completes_is_missed(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    for i in range(30):
        await b.watch(f"t{i}")
        await a.cluster.publish_topic(f"t{i}", i)
    await bounded(eventually(lambda: len(b.got) == 30))
    assert sorted(data for _, data in b.got) == list(range(30))


async def test_odd_topic_names_are_routed_exactly(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    for topic in ODD_TOPICS:
        await b.watch(topic)
    for i, topic in enumerate(ODD_TOPICS):
        await a.cluster.publish_topic(topic + "!", -1)  # a neighbour of each, not watched
        await a.cluster.publish_topic(topic, i)
    await bounded(eventually(lambda: len(b.got) == len(ODD_TOPICS)))
    assert b.got == [(topic, i) for i, topic in enumerate(ODD_TOPICS)]
    assert b.raw == ODD_TOPICS


async def test_a_topic_watched_again_at_once_loses_nothing(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await b.watch("t")
    b.cluster.unwatch_topic("t")
    await b.watch("t")
    await a.cluster.publish_topic("t", 1)
    await bounded(eventually(lambda: b.data_of("t") == [1]))


async def test_an_unwatched_topic_stops_reaching_on_topic_at_once(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await b.watch("t")
    await b.watch("marker")
    b.cluster.unwatch_topic("t")  # lingering on the broker (or gone): on_topic sees it no more
    await a.cluster.publish_topic("t", 1)
    await a.cluster.publish_topic("marker", 2)
    await bounded(eventually(lambda: b.data_of("marker") == [2]))
    assert b.data_of("t") == []


async def test_watching_and_unwatching_under_publications(make_node: MakeNode) -> None:
    """Watches and unwatches race publications; at the end, each topic watched gets its
    final publication, and no topic left unwatched reaches on_topic after it was left."""
    a, b = await make_node(), await make_node()
    rng = random.Random(24)
    topics = [f"r{i}" for i in range(12)]
    watched = set()
    for step in range(150):
        topic = rng.choice(topics)
        if topic in watched:
            b.cluster.unwatch_topic(topic)
            watched.discard(topic)
        elif rng.random() < 0.5:
            await b.watch(topic)
            watched.add(topic)
        await a.cluster.publish_topic(rng.choice(topics), step)
    cut = len(b.got)
    for topic in topics:
        await a.cluster.publish_topic(topic, "final")
    await b.watch("marker")
    await a.cluster.publish_topic("marker", "end")
    await bounded(eventually(lambda: b.data_of("marker") == ["end"]))
    finals = sorted(t for t, data in b.got[cut:] if data == "final")
    assert finals == sorted(watched)
    assert {t for t, _ in b.got[cut:]} <= watched | {"marker"}


async def test_a_node_still_broadcasting_is_heard_by_a_routed_node(
    make_node: MakeNode, kind: str, history: bool
) -> None:
    if kind == "nats" and history:
        pytest.skip(
            "on NATS a broadcasting node's history publications reach the nodes following the stream only: "
            "a routed node hears them when a routed publication of the topic shows the gap"
        )
    old, new = await make_node(per_topic=False), await make_node()
    await new.watch("t")
    await old.cluster.publish_topic("other", 0)
    await old.cluster.publish_topic("t", 1)
    await bounded(eventually(lambda: new.data_of("t") == [1]))
    assert [t for t, _ in new.got] == ["t"]  # "other" reached the node, not on_topic


async def test_without_per_topic_every_node_receives_everything(make_node: MakeNode) -> None:
    a, b = await make_node(per_topic=False), await make_node(per_topic=False)
    assert b.cluster.watch_topic("t") is None
    await a.cluster.publish_topic("u", 1)
    await bounded(eventually(lambda: b.data_of("u") == [1] and a.data_of("u") == [1]))


@pytest.mark.parametrize("kind", ["redis", "nats"], indirect=True)
@pytest.mark.parametrize("history", [False], indirect=True, ids=["live"])
async def test_past_the_subscription_limit_one_wildcard_brings_the_rest_once(make_node: MakeNode) -> None:
    a = await make_node()
    b = await make_node(max_topic_subscriptions=2, topic_linger=0.05)
    for topic in ("t1", "t2", "t3", "t4"):
        await b.watch(topic)
    interest = b.cluster.broker._interest  # type: ignore[attr-defined]
    assert interest.own == {"t1", "t2"} and interest.wildcard
    for topic in ("t1", "t2", "t3", "t4", "t5"):
        await a.cluster.publish_topic(topic, topic)
    await bounded(eventually(lambda: len(b.got) == 4))
    await b.watch("marker")
    await a.cluster.publish_topic("marker", "end")
    await bounded(eventually(lambda: b.data_of("marker") == ["end"]))
    assert [t for t, _ in b.got] == ["t1", "t2", "t3", "t4", "marker"]  # each once; t5 not at all
    # The wildcard's topics leave: it goes after its linger, and a new topic gets a subscription
    # of its own again (an own one lingering makes room for it).
    for topic in ("t3", "t4", "marker", "t1"):
        b.cluster.unwatch_topic(topic)
    await bounded(eventually(lambda: not interest.wildcard))
    await b.watch("t6")
    assert "t6" in interest.own and not interest.wildcard
    await a.cluster.publish_topic("t6", 6)
    await bounded(eventually(lambda: b.data_of("t6") == [6]))


@pytest.mark.parametrize("own_broker", ["redis", "nats"], indirect=True)
async def test_watched_topics_are_subscribed_again_after_a_broker_restart(own_broker: BrokerServer) -> None:  # noqa: F811
    namespace = f"tr{uuid.uuid4().hex[:10]}"
    nodes: List[TopicNode] = []
    try:
        for _ in range(2):
            cluster = Cluster(broker_from_url(own_broker.url, namespace=namespace), heartbeat_interval=0.2)
            cluster.per_topic = True
            nodes.append(TopicNode(cluster))
            await cluster.start()
        a, b = nodes
        await b.watch("t")
        own_broker.stop()
        await bounded(eventually(lambda: not a.cluster.broker.available and not b.cluster.broker.available))
        own_broker.start()

        async def heard() -> bool:
            try:
                await a.cluster.publish_topic("t", "again")
            except RpcBrokerUnavailableError:
                return False
            return "again" in b.data_of("t")

        await bounded(eventually(heard, timeout=20, interval=0.05), 25)
        assert {t for t, _ in b.got} == {"t"}
    finally:
        for node in nodes:
            await bounded(node.cluster.close())


async def test_topics_watched_before_routing_is_on_are_routed(kind: str, request: Any) -> None:
    """The hub may watch before it turns ``per_topic`` on (or the other way round)."""
    namespace = f"tb{uuid.uuid4().hex[:10]}"
    hub = LocalHub()
    url = "" if kind == "local" else request.getfixturevalue(f"{kind}_server").url

    def broker() -> Broker:
        return LocalBroker(hub) if kind == "local" else broker_from_url(url, namespace=namespace)

    a, b = TopicNode(Cluster(broker())), TopicNode(Cluster(broker()))
    try:
        assert b.cluster.watch_topic("t") is None  # not routed yet: every node hears everything
        a.cluster.per_topic = True
        b.cluster.per_topic = True
        await a.cluster.start()
        await b.cluster.start()
        waiter: Optional[Awaitable[None]] = b.cluster.watch_topic("marker")
        if waiter is not None:
            await bounded(waiter)
        await a.cluster.publish_topic("t", 1)
        await a.cluster.publish_topic("u", 2)
        await a.cluster.publish_topic("marker", 3)
        await bounded(eventually(lambda: b.data_of("marker") == [3]))
        assert [t for t, _ in b.got] == ["t", "marker"]
        assert sorted(b.cluster.watched_topics()) == ["marker", "t"]
    finally:
        await a.cluster.close()
        await b.cluster.close()


async def test_watch_waiters_of_a_lost_connection_complete() -> None:
    """A watcher never waits on a connection that went away (the interest lets it go)."""
    from fastwsrpc.cluster.base import TopicInterest

    made: List[asyncio.Future[Any]] = []

    def subscribe(topic: Optional[str]) -> asyncio.Future[Any]:
        made.append(asyncio.get_running_loop().create_future())
        return made[-1]

    interest = TopicInterest(subscribe, lambda topic: None, max_topics=4, linger=0.01, timeout=30)
    assert interest.watch("t") is None  # down: nothing to wait for
    waiters = interest.up()
    assert len(waiters) == 1 and len(made) == 1 and interest.own == {"t"}
    made[0].set_result(None)
    await bounded(waiters[0])
    waiter = interest.watch("u")
    assert isinstance(waiter, asyncio.Future) and not waiter.done()
    interest.down()
    assert waiter.done()
    assert interest.watched == {"t", "u"} and not interest.own


# ------------------------------------------------------------------ with a TopicHub hooked up
class RoutedHub(TopicHub):
    """A TopicHub hooked up to routed topics as topics.py is to be (see ``Cluster.watch_topic``):
    ``per_topic`` on when attached, a topic watched on its first subscriber here (and the
    subscription's start waiting for it, as its stream id will), unwatched after its last.
    Written against TopicHub's internals (``_topics``, ``_forget``): a stand-in until the hub does it."""

    def attach(self, cluster: Cluster) -> None:
        super().attach(cluster)
        cluster.per_topic = True

    async def open(self, topics: List[str], **kwargs: Any) -> Any:
        fresh = [t for t in topics if not self._topics.get(t)]
        channel = SimpleNamespace(id="stand-in", socket=SimpleNamespace(peer="test"))
        events = self.subscribe(channel, topics, **kwargs)
        assert self._cluster is not None
        waiters = [w for w in (self._cluster.watch_topic(t) for t in fresh) if w is not None]
        await bounded(asyncio.gather(*waiters))
        return events

    def _forget(self, sub: Any, names: List[str]) -> None:
        super()._forget(sub, names)
        for name in names:
            if not self._topics.get(name) and self._cluster is not None:
                self._cluster.unwatch_topic(name)


MakeHub = Callable[..., Awaitable[RoutedHub]]


@pytest.fixture
async def make_hub(request: Any, kind: str) -> AsyncIterator[MakeHub]:
    namespace = f"th{uuid.uuid4().hex[:12]}"
    shared = LocalHub()
    url = "" if kind == "local" else request.getfixturevalue(f"{kind}_server").url
    made: List[Cluster] = []

    async def make(history: int = 2000) -> RoutedHub:
        if kind == "local":
            broker: Broker = LocalBroker(shared)
        else:
            options = {"history_storage": "memory"} if kind == "nats" else {}
            broker = broker_from_url(url, namespace=namespace, **options)
        cluster = Cluster(broker, presence_ttl=3.0, heartbeat_interval=0.2)
        made.append(cluster)
        hub = RoutedHub(history=history)
        hub.attach(cluster)
        await cluster.start()
        return hub

    yield make
    for cluster in made:
        await bounded(cluster.close())


async def take(events: Any, count: int) -> List[Dict[str, Any]]:
    return [await bounded(events.__anext__()) for _ in range(count)]


async def test_hub_a_resubscriber_on_another_node_gets_exactly_what_it_missed(make_hub: MakeHub) -> None:
    publisher, subscriber = await make_hub(), await make_hub()
    positions = [await publisher.publish("t", n) for n in range(1, 301)]
    epoch = positions[0][0]  # type: ignore[index]
    events = await subscriber.open(["t"], since={"t": {"epoch": epoch, "offset": 100}})
    notice = (await take(events, 1))[0]
    assert notice == {"topic": "t", "recovered": True, "epoch": epoch, "offset": 300, "missed": 200}
    assert [e["offset"] for e in await take(events, 200)] == list(range(101, 301))
    await publisher.publish("t", 301)  # then live, routed from the other node
    assert (await take(events, 1))[0]["offset"] == 301
    await events.aclose()


async def test_hub_a_new_subscription_misses_nothing_published_after_it_opened(make_hub: MakeHub) -> None:
    publisher, subscriber = await make_hub(history=0), await make_hub(history=0)
    for round_ in range(5):
        topic = f"t{round_}"
        events = await subscriber.open([topic])
        for n in range(20):
            await publisher.publish(topic, n)
        assert [e["data"] for e in await take(events, 20)] == list(range(20))
        await events.aclose()  # the topic's last subscriber here: unwatched (lingers, or goes)


async def test_hub_two_nodes_publishing_one_topic_concurrently(make_hub: MakeHub) -> None:
    """Routed from two publishers at once (on NATS their live copies can cross: the hub fills
    the gaps from the history), every subscriber gets every offset once, in order."""
    a, b, c = await make_hub(), await make_hub(), await make_hub()
    on_c = await c.open(["t"], since={})
    assert (await take(on_c, 1))[0]["offset"] == 0

    async def publish(hub: TopicHub, name: str) -> List[Any]:
        return [await hub.publish("t", f"{name}{n}") for n in range(100)]

    await bounded(asyncio.gather(publish(a, "a"), publish(b, "b")), 60)
    seen = await take(on_c, 200)
    assert [e["offset"] for e in seen] == list(range(1, 201))
    await on_c.aclose()
