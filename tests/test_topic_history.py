"""Topic history and recovery (issue 22, item 2), through TopicHub and the broker APIs.

Each subscription here is driven as the channel drives it (the async iterator a
stream producer consumes), on a stand-in channel, so that every rule is tested
without a client: what a resubscriber with ``since`` receives, the notices, the
merge of replayed and live publications, epoch changes, TTL, slow subscribers.
The broker-parametrised tests run the same on LocalBroker, Redis (Redis Streams)
and NATS (JetStream), with real servers (see ``tests/brokers.py``).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
import uuid
from types import SimpleNamespace
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple

import msgspec
import pytest

from fastwsrpc.cluster import Cluster, LocalBroker, LocalHub, broker_from_url
from fastwsrpc.errors import RemoteValueError
from fastwsrpc.topics import (
    HISTORY_UNAVAILABLE,
    HistoryPolicy,
    HistorySlice,
    MemoryHistory,
    TopicEvent,
    TopicHub,
    covers,
)

from .brokers import BrokerServer, bounded, eventually, nats_server, own_broker, redis_server  # noqa: F401

#: A topic whose name is no NATS subject token (it is carried base64-encoded there).
ODD_TOPIC = "prices btc/€.*>"


class StandIn:
    """What a subscription needs of its channel: an id, a peer name, and close (recorded)."""

    def __init__(self) -> None:
        self.id = "stand-in"
        self.socket = SimpleNamespace(peer="test")
        self.closed: List[Tuple[int, str]] = []

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed.append((code, reason))


def open_subscription(hub: TopicHub, topics: Any, **kwargs: Any) -> Tuple[Any, StandIn]:
    channel = StandIn()
    return hub.subscribe(channel, topics, **kwargs), channel  # type: ignore[arg-type]


async def take(events: Any, count: int, timeout: float = 20.0) -> List[Dict[str, Any]]:
    """The next ``count`` items of a subscription (bounded: a missing item fails, not hangs)."""
    return [await bounded(events.__anext__(), timeout) for _ in range(count)]


async def nothing_more(events: Any) -> None:
    """No item is ready (a duplicate would be): the next one does not come within a moment."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(events.__anext__(), 0.3)


async def continues(events: Any, notice: Dict[str, Any], last: int) -> List[Dict[str, Any]]:
    """The items after ``notice`` up to offset ``last``: each the next offset, in the notice's epoch.

    A notice that does not recover may start a little before the newest
    publication (one still on its way to this node when the subscription was
    registered is delivered, not skipped): what matters is that nothing after
    its position is missing or repeated.
    """
    items = await take(events, last - notice["offset"])
    assert [e["offset"] for e in items] == list(range(notice["offset"] + 1, last + 1))
    assert all(e["epoch"] == notice["epoch"] for e in items)
    return items


def since(position: Tuple[str, int], topic: str = "t") -> Dict[str, Dict[str, Any]]:
    return {topic: {"epoch": position[0], "offset": position[1]}}


MakeHub = Callable[..., Awaitable[TopicHub]]


@pytest.fixture(params=["local", "redis", "nats"])
async def make_hub(request: Any) -> AsyncIterator[MakeHub]:
    """Makes hubs of one cluster (one node each) on the parametrised broker, history on."""
    kind = request.param
    namespace = f"h{uuid.uuid4().hex[:12]}"
    shared = LocalHub()
    url = "" if kind == "local" else request.getfixturevalue(f"{kind}_server").url
    made: List[Cluster] = []

    async def make(history: int = 2000, ttl: Optional[float] = None, **hub_kwargs: Any) -> TopicHub:
        broker = LocalBroker(shared) if kind == "local" else broker_from_url(url, namespace=namespace)
        cluster = Cluster(broker, presence_ttl=3.0, heartbeat_interval=0.2)
        made.append(cluster)
        hub = TopicHub(history=history, history_ttl=ttl, **hub_kwargs)
        hub.attach(cluster)
        await cluster.clients()  # joins the cluster, as an endpoint's node does with its first connection
        return hub

    yield make
    for cluster in made:
        await bounded(cluster.close())


# ------------------------------------------------------------------ recovery on every broker
async def test_a_resubscriber_gets_exactly_what_it_missed(make_hub: MakeHub) -> None:
    publisher, subscriber = await make_hub(), await make_hub()  # two nodes
    positions = [await publisher.publish("t", {"n": n}) for n in range(1, 1001)]
    epoch = positions[0][0]  # type: ignore[index]
    assert positions == [(epoch, n) for n in range(1, 1001)]  # one epoch, offsets 1, 2, 3, ...
    events, _ = open_subscription(subscriber, ["t"], since=since((epoch, 500)))
    notice = (await take(events, 1))[0]
    assert notice == {"topic": "t", "recovered": True, "epoch": epoch, "offset": 1000, "missed": 500}
    replayed = await take(events, 500)
    assert [e["offset"] for e in replayed] == list(range(501, 1001))
    assert [e["data"] for e in replayed] == [{"n": n} for n in range(501, 1001)]
    assert all(e["epoch"] == epoch and e["dropped"] == 0 for e in replayed)
    await publisher.publish("t", {"n": 1001})  # then live, from the other node, after the last replayed
    assert (await take(events, 1))[0]["offset"] == 1001
    await nothing_more(events)
    await events.aclose()


async def test_live_publications_during_recovery_come_once_and_in_order(make_hub: MakeHub) -> None:
    publisher, subscriber = await make_hub(), await make_hub()
    epoch = (await publisher.publish(ODD_TOPIC, 1))[0]  # type: ignore[index]
    for n in range(2, 301):
        await publisher.publish(ODD_TOPIC, n)
    events, _ = open_subscription(subscriber, [ODD_TOPIC], since=since((epoch, 100), ODD_TOPIC))
    # Published after the subscription was registered but before its history is read:
    # both in the history and in the subscription's queue.
    for n in range(301, 351):
        await publisher.publish(ODD_TOPIC, n)

    async def more() -> None:  # and more while it replays
        for n in range(351, 501):
            await publisher.publish(ODD_TOPIC, n)

    task = asyncio.ensure_future(more())
    notice = (await take(events, 1))[0]
    assert notice["recovered"] is True and notice["epoch"] == epoch and notice["missed"] == notice["offset"] - 100
    got = await take(events, 400)
    await task
    assert [e["offset"] for e in got] == list(range(101, 501))
    assert [e["data"] for e in got] == list(range(101, 501))
    await nothing_more(events)
    await events.aclose()


async def test_a_gap_older_than_the_history_is_told(make_hub: MakeHub) -> None:
    hub = await make_hub(history=10)
    positions = [await hub.publish("t", n) for n in range(1, 101)]
    events, channel = open_subscription(hub, ["t"], since=since(positions[49]))  # type: ignore[arg-type]
    notice = (await take(events, 1))[0]
    epoch = positions[0][0]  # type: ignore[index]
    assert (notice["recovered"], notice["reason"], notice["epoch"], notice["missed"]) == (False, "gap", epoch, 0)
    assert 50 < notice["offset"] <= 100
    await hub.publish("t", 101)  # it carries on from the position it was given, nothing skipped
    await continues(events, notice, 101)
    await nothing_more(events)
    assert channel.closed == []
    await events.aclose()


async def test_the_gap_just_inside_the_history_is_recovered(make_hub: MakeHub) -> None:
    hub = await make_hub(history=10)
    positions = [await hub.publish("t", n) for n in range(1, 101)]
    events, _ = open_subscription(hub, ["t"], since=since(positions[89]))  # type: ignore[arg-type]
    notice = (await take(events, 1))[0]
    assert notice["recovered"] is True and notice["missed"] == 10
    assert [e["offset"] for e in await take(events, 10)] == list(range(91, 101))
    await events.aclose()


async def test_a_new_subscription_is_told_where_it_starts(make_hub: MakeHub) -> None:
    hub = await make_hub()
    for n in range(1, 6):
        await hub.publish("a", n)
    events, _ = open_subscription(hub, ["a", "b"], since={})
    notices = await take(events, 2)
    assert [(n["topic"], n["recovered"], n["reason"], n["missed"]) for n in notices] == [
        ("a", False, "new", 0),
        ("b", False, "new", 0),
    ]
    assert notices[0]["offset"] <= 5 and notices[1]["offset"] == 0
    assert isinstance(notices[1]["epoch"], str)  # a topic never published has a position too
    await continues(events, notices[0], 5)  # (any of a's still on its way here when it subscribed)
    await hub.publish("b", "first")
    await continues(events, notices[1], 1)  # in the epoch it was told
    await events.aclose()


async def test_a_new_subscription_misses_nothing_published_after_it_was_registered(make_hub: MakeHub) -> None:
    hub = await make_hub(queue_size=8)
    events, channel = open_subscription(hub, ["t"], since={})
    for n in range(1, 201):  # before the stream reads its start: 8 queued, the rest left in the history
        await hub.publish("t", n)
    notice = (await take(events, 1))[0]
    assert notice["reason"] == "new" and notice["offset"] == 0
    assert [e["data"] for e in await take(events, 200)] == list(range(1, 201))
    assert channel.closed == []
    await events.aclose()


async def test_two_nodes_number_one_topic_alike(make_hub: MakeHub) -> None:
    a, b = await make_hub(), await make_hub()
    on_a, _ = open_subscription(a, ["t"], since={})
    on_b, _ = open_subscription(b, ["t"], since={})
    assert (await take(on_a, 1))[0]["offset"] == 0 and (await take(on_b, 1))[0]["offset"] == 0

    async def publish(hub: TopicHub, name: str) -> List[Any]:
        return [await hub.publish("t", f"{name}{n}") for n in range(100)]

    # Concurrently from both nodes (on NATS, each one's offset can be taken by the other first).
    from_a, from_b = await bounded(asyncio.gather(publish(a, "a"), publish(b, "b")), 60)
    offsets = sorted(p[1] for p in from_a + from_b)
    assert offsets == list(range(1, 201)) and len({p[0] for p in from_a + from_b}) == 1
    seen_a, seen_b = await take(on_a, 200), await take(on_b, 200)
    assert [e["offset"] for e in seen_a] == list(range(1, 201))
    assert [(e["offset"], e["data"]) for e in seen_a] == [(e["offset"], e["data"]) for e in seen_b]
    await on_a.aclose()
    await on_b.aclose()


async def test_history_expires_with_its_ttl(make_hub: MakeHub) -> None:
    hub = await make_hub(ttl=1.0)
    position = await hub.publish("t", 1)
    await hub.publish("t", 2)
    await asyncio.sleep(1.6)  # the thing tested is time passing: the TTL
    events, _ = open_subscription(hub, ["t"], since=since(position))  # type: ignore[arg-type]
    notice = (await take(events, 1))[0]
    # Gone with its epoch (JetStream expires by age in the background: the newest
    # message may still be there a moment, the older one not, which is a gap).
    assert notice["recovered"] is False and notice["reason"] in ("epoch", "gap")
    await events.aclose()


async def test_a_slow_subscriber_is_paced_by_the_history(make_hub: MakeHub) -> None:
    hub = await make_hub(queue_size=4)
    first = await hub.publish("t", 0)
    events, channel = open_subscription(hub, ["t"], since=since(first))  # type: ignore[arg-type]
    assert (await take(events, 1))[0]["recovered"] is True
    for n in range(1, 301):  # far past its queue: it is not disconnected, it reads from the history
        await hub.publish("t", n)
    assert [e["data"] for e in await take(events, 300)] == list(range(1, 301))
    assert channel.closed == []
    await nothing_more(events)
    await events.aclose()


async def test_events_carry_epoch_and_offset_without_since(make_hub: MakeHub) -> None:
    hub = await make_hub()
    events, _ = open_subscription(hub, ["t"])  # a subscriber that does not speak recovery: no notice
    epoch, offset = await hub.publish("t", "x")  # type: ignore[misc]
    item = (await take(events, 1))[0]
    assert item == {"topic": "t", "data": "x", "dropped": 0, "epoch": epoch, "offset": offset}
    event = msgspec.convert(item, TopicEvent)
    assert (event.epoch, event.offset, event.is_notice) == (epoch, offset, False)
    await events.aclose()


# ------------------------------------------------------------------ epoch changes (the broker lost data)
async def test_a_restarted_local_broker_has_a_new_epoch() -> None:
    before = Cluster(LocalBroker(LocalHub()))
    hub = TopicHub(history=100)
    hub.attach(before)
    position = await hub.publish("t", 1)
    await before.close()
    after = Cluster(LocalBroker(LocalHub()))  # a new process: its history starts empty
    hub = TopicHub(history=100)
    hub.attach(after)
    events, _ = open_subscription(hub, ["t"], since=since(position))  # type: ignore[arg-type]
    notice = (await take(events, 1))[0]
    assert notice["recovered"] is False and notice["reason"] == "epoch" and notice["epoch"] != position[0]  # type: ignore[index]
    await events.aclose()
    await after.close()


@pytest.mark.parametrize("own_broker", ["redis"], indirect=True)
async def test_a_restarted_redis_that_lost_its_data_has_a_new_epoch(own_broker: BrokerServer) -> None:  # noqa: F811
    cluster = Cluster(broker_from_url(own_broker.url, namespace="e"), presence_ttl=3.0, heartbeat_interval=0.2)
    hub = TopicHub(history=100)
    hub.attach(cluster)
    position = await hub.publish("t", 1)
    own_broker.restart()  # this Redis keeps nothing on disk: its history is gone
    await eventually(lambda: _published(hub, "t", 2), timeout=20)
    events, _ = open_subscription(hub, ["t"], since=since(position))  # type: ignore[arg-type]
    notice = (await take(events, 1))[0]
    assert notice["recovered"] is False and notice["reason"] == "epoch" and notice["epoch"] != position[0]  # type: ignore[index]
    await events.aclose()
    await cluster.close()


@pytest.mark.parametrize("own_broker", ["redis"], indirect=True)
async def test_a_flushed_redis_is_a_new_epoch_even_for_a_live_subscriber(own_broker: BrokerServer) -> None:  # noqa: F811
    import redis.asyncio as aioredis

    cluster = Cluster(broker_from_url(own_broker.url, namespace="f"), presence_ttl=3.0, heartbeat_interval=0.2)
    hub = TopicHub(history=100)
    hub.attach(cluster)
    position = await hub.publish("t", 1)
    live, _ = open_subscription(hub, ["t"], since=since(position))  # type: ignore[arg-type]
    assert (await take(live, 1))[0]["recovered"] is True
    await hub.publish("t", 2)
    assert (await take(live, 1))[0]["offset"] == 2
    client = aioredis.from_url(own_broker.url)
    await client.flushall()  # the broker loses its data; the nodes stay connected
    await client.aclose()
    epoch, offset = await hub.publish("t", 3)  # type: ignore[misc]
    assert epoch != position[0] and offset == 1  # type: ignore[index]
    notice = (await take(live, 1))[0]
    assert (notice["recovered"], notice["reason"], notice["epoch"]) == (False, "epoch", epoch)
    await hub.publish("t", 4)
    assert (await take(live, 1))[0] == {"topic": "t", "data": 4, "dropped": 0, "epoch": epoch, "offset": 2}
    later, _ = open_subscription(hub, ["t"], since=since(position))  # type: ignore[arg-type]
    assert (await take(later, 1))[0]["reason"] == "epoch"  # an old position cannot be recovered either
    await live.aclose()
    await later.aclose()
    await cluster.close()


@pytest.mark.parametrize("own_broker", ["nats"], indirect=True)
async def test_nats_keeps_history_across_a_restart_and_a_lost_stream_is_a_new_epoch(
    own_broker: BrokerServer,  # noqa: F811
) -> None:
    cluster = Cluster(broker_from_url(own_broker.url, namespace="e"), presence_ttl=3.0, heartbeat_interval=0.2)
    hub = TopicHub(history=100)
    hub.attach(cluster)
    positions = [await hub.publish("t", n) for n in range(1, 21)]
    own_broker.restart()  # file storage: JetStream keeps the stream
    await eventually(lambda: _published(hub, "t", 21), timeout=20)
    events, _ = open_subscription(hub, ["t"], since=since(positions[9]))  # type: ignore[arg-type]
    notice = (await take(events, 1))[0]
    assert notice["recovered"] is True and notice["missed"] == 11
    assert [e["data"] for e in await take(events, 11)] == list(range(11, 22))
    await events.aclose()

    import nats

    nc = await nats.connect(own_broker.url)
    await nc.jetstream().delete_stream("e_topics")  # the history is lost
    await nc.close()
    await eventually(lambda: _published(hub, "t", 22), timeout=20)
    events, _ = open_subscription(hub, ["t"], since=since(positions[-1]))  # type: ignore[arg-type]
    notice = (await take(events, 1))[0]
    assert notice["recovered"] is False and notice["reason"] == "epoch" and notice["epoch"] != positions[0][0]  # type: ignore[index]
    await events.aclose()
    await cluster.close()


async def _published(hub: TopicHub, topic: str, data: Any) -> bool:
    """Publish once the broker is back (``eventually`` retries it until then)."""
    try:
        await hub.publish(topic, data)
    except Exception:
        return False
    return True


# ------------------------------------------------------------------ what reaches a node, repaired
async def test_a_publication_lost_on_the_way_is_replayed_from_the_history() -> None:
    shared = LocalHub()
    cluster = Cluster(LocalBroker(shared))
    hub = TopicHub(history=100)
    hub.attach(cluster)
    events, channel = open_subscription(hub, ["t"])  # even without since: the stream repairs it
    await hub.publish("t", 1)
    await hub.publish("t", 2)
    policy = HistoryPolicy(100)
    now = asyncio.get_running_loop().time()
    for n in (3, 4):  # stored, but never delivered (a broker that dropped them on the way)
        shared.history.append("t", msgspec.json.encode(n), policy, now)
    await hub.publish("t", 5)
    assert [(e["offset"], e["data"]) for e in await take(events, 5)] == [(n, n) for n in range(1, 6)]
    assert channel.closed == []
    await nothing_more(events)
    await events.aclose()
    await cluster.close()


async def test_an_epoch_change_while_subscribed_is_told() -> None:
    shared = LocalHub()
    cluster = Cluster(LocalBroker(shared))
    hub = TopicHub(history=100)
    hub.attach(cluster)
    events, _ = open_subscription(hub, ["t"], since={})
    first = (await take(events, 1))[0]
    await hub.publish("t", 1)
    assert (await take(events, 1))[0]["epoch"] == first["epoch"]
    shared.history = MemoryHistory()  # the broker lost its history
    epoch, _ = await hub.publish("t", 2)  # type: ignore[misc]
    notice = (await take(events, 1))[0]
    assert notice == {"topic": "t", "recovered": False, "epoch": epoch, "offset": 1, "missed": 0, "reason": "epoch"}
    await hub.publish("t", 3)
    assert (await take(events, 1))[0]["offset"] == 2
    await events.aclose()
    await cluster.close()


async def test_without_since_a_subscriber_the_history_cannot_cover_is_disconnected() -> None:
    hub = TopicHub(history=10, queue_size=4)
    events, channel = open_subscription(hub, ["t"])
    for n in range(1, 101):
        await hub.publish("t", n)
    assert [e["data"] for e in await take(events, 4)] == [1, 2, 3, 4]
    with pytest.raises(StopAsyncIteration):
        await bounded(events.__anext__())
    await eventually(lambda: bool(channel.closed))
    assert channel.closed[0][0] == 1008 and "lost publications on topic 't'" in channel.closed[0][1]
    assert hub.subscriber_count() == 0


async def test_drop_policies_still_drop_with_history() -> None:
    hub = TopicHub(history=1000, queue_size=4, on_slow="drop_new")
    events, _ = open_subscription(hub, ["t"])
    for n in range(1, 21):
        await hub.publish("t", n)
    got = await take(events, 4)
    assert [e["data"] for e in got] == [1, 2, 3, 4]
    await hub.publish("t", 21)
    last = (await take(events, 1))[0]
    assert (last["data"], last["dropped"]) == (21, 16)  # the drops are not replayed from the history
    await nothing_more(events)
    await events.aclose()


# ------------------------------------------------------------------ the hub alone, validation, errors
async def test_a_hub_without_a_cluster_keeps_history_in_memory() -> None:
    hub = TopicHub(history=50)
    positions = [await hub.publish("t", n) for n in range(100)]
    events, _ = open_subscription(hub, ["t"], since=since(positions[59]))  # type: ignore[arg-type]
    assert (await take(events, 1))[0]["missed"] == 40
    assert [e["data"] for e in await take(events, 40)] == list(range(60, 100))
    await events.aclose()


async def test_without_history_a_recovery_is_told_there_is_none() -> None:
    hub = TopicHub()
    events, _ = open_subscription(hub, ["t"], since={"t": {"epoch": "e", "offset": 3}})
    notice = (await take(events, 1))[0]
    assert notice == {
        "topic": "t",
        "recovered": False,
        "epoch": None,
        "offset": None,
        "missed": 0,
        "reason": "no_history",
    }
    hub.publish_local("t", 1)
    assert (await take(events, 1))[0] == {"topic": "t", "data": 1, "dropped": 0}
    event = msgspec.convert(notice, TopicEvent)
    assert event.is_notice and event.recovered is False and event.reason == "no_history"
    await events.aclose()


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"t": 3},
        {"t": {"epoch": 1, "offset": 1}},
        {"t": {"epoch": "e", "offset": -1}},
        {"t": {"epoch": "e", "offset": True}},
        {"t": {"epoch": "e"}},
        {"other": {"epoch": "e", "offset": 1}},
    ],
)
def test_a_malformed_since_is_invalid_params(bad: Any) -> None:
    hub = TopicHub(history=10)
    with pytest.raises(RemoteValueError) as caught:
        hub.subscribe(StandIn(), ["t"], since=bad)  # type: ignore[arg-type]
    assert caught.value.code == -32602
    assert hub.subscriber_count() == 0


async def test_a_history_that_cannot_be_read_ends_the_stream_with_its_code() -> None:
    cluster = Cluster(LocalBroker())
    hub = TopicHub(history=10)
    hub.attach(cluster)
    await cluster.clients()
    await cluster.broker.close()  # the broker is unreachable
    events, _ = open_subscription(hub, ["t"], since={"t": {"epoch": "e", "offset": 1}})
    with pytest.raises(RemoteValueError) as caught:
        await bounded(events.__anext__())
    assert caught.value.code == HISTORY_UNAVAILABLE
    assert caught.value.data == {"topic": "t", "epoch": "e", "offset": 1}
    await events.aclose()
    await cluster.close()


def test_a_broker_without_history_is_refused() -> None:
    class Legacy:  # a third-party broker written before history existed
        available = True

    with pytest.raises(TypeError, match="keeps no topic history"):
        TopicHub(history=10).attach(Cluster(Legacy()))  # type: ignore[arg-type]
    TopicHub().attach(Cluster(Legacy()))  # type: ignore[arg-type]  # without history it is fine


@pytest.mark.parametrize("kwargs", [{"history": -1}, {"history": 1.5}, {"history": 10, "history_ttl": 0}])
def test_history_settings_are_checked(kwargs: Any) -> None:
    with pytest.raises(ValueError):
        TopicHub(**kwargs)


# ------------------------------------------------------------------ the memory store and its cost
def test_memory_history_keeps_the_last_n_and_covers_only_a_contiguous_run() -> None:
    store = MemoryHistory()
    policy = HistoryPolicy(3)
    epoch = ""
    for n in range(1, 11):
        epoch, _ = store.append("t", b"%d" % n, policy, 0.0)
    held = store.read("t", (epoch, 0), policy, 0.0)
    assert held == HistorySlice(epoch, 10, [(8, b"8"), (9, b"9"), (10, b"10")])
    assert covers((epoch, 0), held)[:2] == (False, "gap")
    assert covers((epoch, 7), held) == (True, "", [(8, b"8"), (9, b"9"), (10, b"10")])
    assert covers((epoch, 10), store.read("t", (epoch, 10), policy, 0.0)) == (True, "", [])
    assert covers((epoch, 11), held)[:2] == (False, "ahead")
    assert covers(("other", 7), held)[:2] == (False, "epoch")
    assert covers(None, held)[:2] == (False, "new")
    # A store that lost an entry in the middle shows a gap, never a hole:
    assert covers((epoch, 7), HistorySlice(epoch, 10, [(8, b""), (10, b"")]))[:2] == (False, "gap")


def test_memory_history_forgets_idle_topics_after_the_ttl() -> None:
    store = MemoryHistory()
    policy = HistoryPolicy(100, ttl=10.0)
    old = store.append("a", b"1", policy, 0.0)
    epoch_b, _ = store.append("b", b"1", policy, 1.0)
    store.append("b", b"2", policy, 9.0)
    assert len(store) == 2
    store.append("b", b"3", policy, 12.0)  # "a" is 12 s idle: gone; b's entry of 1.0 has expired
    assert len(store) == 1
    assert store.read("b", (epoch_b, 0), policy, 12.0).entries == [(2, b"2"), (3, b"3")]
    fresh = store.read("a", old, policy, 12.0)
    assert fresh.epoch != old[0] and fresh.top == 0  # a new epoch: the old position cannot be recovered
    store.read("a", None, policy, 30.0)
    assert len(store) == 1  # "b" and the "a" of 12.0 expired at 22.0; this read made "a" anew


def test_memory_cost_per_history_entry() -> None:
    """The figure in docs/guide/recovery.md: bytes per entry beyond its JSON (measured, bounded)."""
    policy = HistoryPolicy(10_000, ttl=60.0)
    store = MemoryHistory()
    body = msgspec.json.encode({"n": 1})
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in range(10_000):
            store.append("t", body, policy, n * 1e-3)  # within the TTL: all kept
        per_entry = (tracemalloc.get_traced_memory()[0] - base) / 10_000
    finally:
        tracemalloc.stop()
    sys.stdout.write(f"\nhistory entry overhead: {per_entry:.0f} bytes + the JSON's bytes object\n")
    assert 60 < per_entry < 200
