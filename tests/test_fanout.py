"""Fan-out (issue 24): a publication's frame is written to each subscriber past its stream's task.

A subscription whose stream waits for its queue, with a credit to spare, gets the
publication written by ``TopicHub.publish_local`` itself: the item's JSON encoded
once for all subscribers, a frame per subscriber from bytes, through the
transport's ``send_nowait``. Anything else (no spare credit, a transport that
would wait, something queued, a gap in the history) goes through the queue and
the stream's task as before. These tests pin that both paths give the same
items, in order, once each; that a subscriber that does not read holds nobody
else back; and that nothing is encoded per subscriber on the direct path.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import pytest

from fastwsrpc import RpcChannel, RpcMethodsBase, RpcSettings, WebSocketRpcClient, protocol
from fastwsrpc.protocol import STREAM_ITEM, encode_notification
from fastwsrpc.streams import INITIAL_CREDITS
from fastwsrpc.testing import memory_pair, until
from fastwsrpc.topics import DEFAULT_TOPIC_QUEUE, SUBSCRIBE, TopicEvent, TopicHub

from .support import NativeServerThread


class Pairs:
    """``n`` server channels sharing one hub, each with its client channel, on memory pairs."""

    def __init__(self, hub: TopicHub, n: int, speedups: Any) -> None:
        self.channels: List[RpcChannel] = []
        self.readers: List[asyncio.Future[Any]] = []
        for _ in range(n):
            a, b = memory_pair()
            server = RpcChannel(RpcMethodsBase(), a, settings=RpcSettings(), speedups=speedups, topics=hub)
            client = RpcChannel(RpcMethodsBase(), b, settings=RpcSettings(), speedups=speedups)
            self.channels += [server, client]
            self.readers += [asyncio.ensure_future(server.run()), asyncio.ensure_future(client.run())]

    @property
    def clients(self) -> List[RpcChannel]:
        return self.channels[1::2]

    async def close(self) -> None:
        for channel in self.channels:
            channel.abort("test over")
        await asyncio.gather(*self.readers, return_exceptions=True)


async def test_a_publication_to_many_subscribers_is_encoded_once_end_to_end(
    speedups: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = TopicHub()
    pairs = Pairs(hub, 20, speedups)
    streams = [client.subscribe("t") for client in pairs.clients]
    for stream in streams:
        await stream.open()
    await until(lambda: hub.subscriber_count("t") == 20)
    await until(lambda: all(sub.waiter is not None for sub in hub._topics["t"]))  # every stream waits

    data = {"price": 1}
    encoded: List[Any] = []
    frames: List[Any] = []
    real_encode = protocol.encode
    real_notification = encode_notification

    def counting_notification(method: str, params: Any = None) -> bytes:
        if method == STREAM_ITEM:
            frames.append(params)
        return real_notification(method, params)

    def counting_encode(value: Any) -> bytes:
        if value is data:
            encoded.append(value)
        return real_encode(value)

    monkeypatch.setattr("fastwsrpc.streams.encode_notification", counting_notification)
    monkeypatch.setattr("fastwsrpc.topics.encode", counting_encode)
    try:
        assert hub.publish_local("t", data) == 20
        for stream in streams:
            event = await asyncio.wait_for(stream.next(), 10)
            assert event == TopicEvent("t", {"price": 1}, 0)
    finally:
        monkeypatch.undo()
        await pairs.close()
    assert len(encoded) == 1, f"the publication was encoded {len(encoded)} times for 20 subscribers"
    assert frames == [], "no subscriber's task encoded a frame of its own"


@pytest.mark.parametrize("history", [0, 1000])
async def test_direct_and_queued_items_keep_their_order(history: int, speedups: Any) -> None:
    """A window of 4 credits: a few items go past the task, the rest wait in the queue; all come, in order."""
    hub = TopicHub(history=history)
    pairs = Pairs(hub, 3, speedups)
    streams = [client.subscribe("t", buffer=4) for client in pairs.clients]
    for stream in streams:
        await stream.open()
    await until(lambda: all(sub.waiter is not None for sub in hub._topics.get("t", ())) and len(hub._topics["t"]) == 3)
    for n in range(1, 101):  # without yielding: direct while credits last, then queued
        await hub.publish("t", n) if history else hub.publish_local("t", n)
    for stream in streams:
        got = [await asyncio.wait_for(stream.next(), 10) for _ in range(100)]
        assert [event.data for event in got] == list(range(1, 101))
        if history:
            assert [event.offset for event in got] == list(range(1, 101))
        assert all(event.dropped == 0 for event in got)
    for n in range(101, 111):  # and back on the direct path once the stream waits again
        await hub.publish("t", n) if history else hub.publish_local("t", n)
    for stream in streams:
        assert [(await asyncio.wait_for(stream.next(), 10)).data for _ in range(10)] == list(range(101, 111))
        assert not stream._items
    await pairs.close()


async def test_a_gap_in_what_reached_the_node_is_filled_from_the_history(speedups: Any) -> None:
    """A publication the broker lost (in the history, never offered here): the next one is not written past
    the task; the task fills the gap from the history first."""
    hub = TopicHub(history=100)
    pairs = Pairs(hub, 1, speedups)
    stream = pairs.clients[0].subscribe("t")
    await stream.open()
    await until(lambda: all(sub.waiter is not None for sub in hub._topics.get("t", ())))
    await hub.publish("t", 1)
    assert (await asyncio.wait_for(stream.next(), 10)).offset == 1
    memory = hub._memory
    assert memory is not None and hub.history_policy is not None
    now = asyncio.get_running_loop().time()
    memory.append("t", b"2", hub.history_policy, now)  # kept, never offered: lost on its way here
    epoch, offset = memory.append("t", b"3", hub.history_policy, now)
    hub.publish_local("t", 3, epoch, offset)
    got = [await asyncio.wait_for(stream.next(), 10) for _ in range(2)]
    assert [(event.data, event.offset) for event in got] == [(2, 2), (3, 3)]
    await pairs.close()


async def test_a_subscriber_that_reads_nothing_holds_nobody_back_on_the_native_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real server, real clients: a raw peer that subscribes and grants no credit past the first ones meets
    its policy (drop_oldest), has its own call answered meanwhile, and the others get every publication."""
    from websockets.asyncio.client import connect

    from fastwsrpc.server import WebSocketRpcServer

    by_task: List[Any] = []
    real = encode_notification

    def counting(method: str, params: Any = None) -> bytes:
        if method == STREAM_ITEM:
            by_task.append(params)
        return real(method, params)

    monkeypatch.setattr("fastwsrpc.streams.encode_notification", counting)
    owner = WebSocketRpcServer(RpcMethodsBase())
    with NativeServerThread(owner, path="/ws") as thread:
        hub = owner.service.topics
        url = thread.url("/ws")
        clients = [WebSocketRpcClient(url) for _ in range(10)]
        for client in clients:
            await client.__aenter__()
        streams = [client.subscribe("t", buffer=64) for client in clients]
        for stream in streams:
            await stream.open()
        async with connect(url) as raw:
            subscribe = {"topics": ["t"], "on_slow": "drop_oldest"}
            await raw.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": SUBSCRIBE, "params": subscribe}))
            assert json.loads(await asyncio.wait_for(raw.recv(), 10))["result"] == {"stream": 1}
            await until(lambda: hub.subscriber_count("t") == 11)

            async def publish(first: int, last: int) -> None:
                for n in range(first, last + 1):
                    hub.publish_local("t", {"n": n})

            loop = thread.loop
            assert loop is not None
            for first in range(1, 401, 50):  # in batches the readers' windows hold: they never fall behind
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(publish(first, first + 49), loop))
                for stream in streams:
                    got = [await asyncio.wait_for(stream.next(), 20) for _ in range(50)]
                    assert [event.data["n"] for event in got] == list(range(first, first + 50))
            assert len(by_task) < 4000 // 2, "most items to readers that keep up are written past their tasks"
            # The raw peer: its initial credits' worth of items, then the answer to its own call.
            await raw.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "_ping_"}))
            seen: List[Dict[str, Any]] = []
            while not any(m.get("id") == 2 for m in seen):
                seen.append(json.loads(await asyncio.wait_for(raw.recv(), 10)))
            items = [m["params"]["item"] for m in seen if m.get("method") == STREAM_ITEM]
            assert [item["data"]["n"] for item in items] == list(range(1, INITIAL_CREDITS + 1))
            # Credits now: the newest the queue kept (the oldest made room), each telling how many were dropped.
            credit = {"stream": 1, "credits": 1000}
            await raw.send(json.dumps({"jsonrpc": "2.0", "method": "$/stream.credit", "params": credit}))
            rest: List[Dict[str, Any]] = []
            while len(rest) < DEFAULT_TOPIC_QUEUE:
                message = json.loads(await asyncio.wait_for(raw.recv(), 10))
                if message.get("method") == STREAM_ITEM:
                    rest.append(message["params"]["item"])
            kept = list(range(401 - DEFAULT_TOPIC_QUEUE, 401))
            assert [item["data"]["n"] for item in rest] == kept
            assert {item["dropped"] for item in rest} == {400 - INITIAL_CREDITS - DEFAULT_TOPIC_QUEUE}
        for client in clients:
            await client.__aexit__(None, None, None)


async def test_stream_items_of_a_bad_shape_or_an_unknown_stream_are_handled_as_any_control_message(
    speedups: Any,
) -> None:
    """The subscriber's shortcut for items (decode straight to the consumer) keeps the protocol's checks:
    an item whose stream is not an id is ignored, one of an unknown stream is cancelled once, and the
    connection goes on answering."""
    raw, end = memory_pair()
    channel = RpcChannel(RpcMethodsBase(), end, settings=RpcSettings(), speedups=speedups)
    reader = asyncio.ensure_future(channel.run())
    try:
        for params in ({"stream": [1], "item": 1}, {"stream": 99, "item": 1}, {"stream": 99, "item": 2}):
            await raw.send(json.dumps({"jsonrpc": "2.0", "method": STREAM_ITEM, "params": params}).encode())
        await raw.send(b'{"jsonrpc":"2.0","id":7,"method":"_ping_"}')
        got = [json.loads(await asyncio.wait_for(raw.receive(), 10)) for _ in range(2)]
        assert got[0] == {"jsonrpc": "2.0", "method": "$/stream.cancel", "params": {"stream": 99}}
        assert got[1]["id"] == 7  # answered (method not found here): the connection reads on
        assert not channel.is_closed()
    finally:
        channel.abort("test over")
        await asyncio.gather(reader, return_exceptions=True)
