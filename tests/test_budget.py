"""The budget's rules on a memory pair, on both twins: what is bounded, what always gets through.

The rule: bound the work, never stop hearing the peer. Each test plays a peer
by hand (``peer``) against a server channel and checks one point of the issue
"a busy connection goes deaf".
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, List

from fastwsrpc import RpcMethodsBase, RpcSettings
from fastwsrpc.testing import channel_pair, until

from . import test_flow_control as flow
from .test_flow_control import stop


class Held(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.ran: List[Any] = []
        self.cancels: List[int] = []  # shared with the channel's copy of these methods

    async def wait(self, i: int = 0) -> int:
        self.ran.append(i)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancels.append(i)
            raise
        return i

    async def add(self, a: int, b: int) -> int:
        self.ran.append(("add", a))
        return a + b

    async def echo(self, data: str) -> int:
        return len(data)

    async def self_cancel(self, i: int = 0) -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return "cancelled my task"

    async def naps(self, i: int = 0) -> str:
        await asyncio.sleep(0)
        return "napped"


def request(i: Any, method: str = "wait", **params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {"i": i}, "id": i})


def notification(method: str, **params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params})


async def serve(methods: RpcMethodsBase, speedups: Any, maxsize: int = 64, **limits: Any) -> Any:
    """A server channel on one end of a memory pair; the test drives the other end by hand."""
    return await flow.serve(methods, speedups, maxsize, **limits)


async def test_past_the_queue_a_call_is_refused_at_once_with_the_limit(speedups: Any) -> None:
    methods = Held()
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=2, max_queued_requests=3)
    for i in range(6):
        await peer.send(request(i))
    refused = json.loads(await peer.receive())
    assert refused["id"] == 5 and refused["error"]["code"] == -32001
    assert refused["error"]["data"] == {"limit": "max_queued_requests", "value": 3, "retry_after": 0.1}
    assert channel.running_count == 2 and channel.queued_count == 3 and not channel.reading_paused
    methods.gate.set()
    answers = sorted([json.loads(await peer.receive())["result"] for _ in range(5)])
    assert answers == [0, 1, 2, 3, 4]
    await stop(channel, reader)


async def test_the_byte_budget_refuses_calls_and_counts_queued_bytes(speedups: Any) -> None:
    methods = Held()
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=1, max_connection_bytes=10_000)
    await peer.send(request(0))
    big = json.dumps({"jsonrpc": "2.0", "method": "echo", "params": {"data": "x" * 6_000}, "id": "big"})
    await peer.send(big)  # queued: its bytes count
    await until(lambda: channel.queued_count == 1)
    assert channel.held_bytes >= 6_000
    await peer.send(big.replace('"big"', '"big2"'))  # would pass 10,000 bytes
    refused = json.loads(await peer.receive())
    assert refused["id"] == "big2" and refused["error"]["data"]["limit"] == "max_connection_bytes"
    methods.gate.set()
    got = {json.loads(await peer.receive())["id"] for _ in range(2)}
    assert got == {0, "big"}
    await until(lambda: channel.held_bytes == 0 and channel.running_count == 0)
    await stop(channel, reader)


async def test_one_message_up_to_max_message_size_is_admitted_to_an_empty_budget(speedups: Any) -> None:
    channel, reader, peer = await serve(Held(), speedups, max_connection_bytes=100)
    await peer.send(json.dumps({"jsonrpc": "2.0", "method": "echo", "params": {"data": "x" * 5_000}, "id": 1}))
    assert json.loads(await peer.receive())["result"] == 5_000
    await stop(channel, reader)


async def test_a_queued_call_that_is_cancelled_never_runs(speedups: Any) -> None:
    methods = Held()
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=1)
    await peer.send(request(0))
    await peer.send(request(1))
    await until(lambda: channel.queued_count == 1)
    await peer.send(notification("$/cancelRequest", id=1))
    await peer.send(notification("$/cancelRequest", id=0))
    await until(lambda: len(methods.cancels) == 1 and channel.running_count == 0)
    assert methods.ran == [0] and channel.queued_count == 0 and channel.held_bytes == 0
    await peer.send(request(2, "add", a=2, b=3))
    assert json.loads(await peer.receive()) == {"jsonrpc": "2.0", "id": 2, "result": 5}
    await stop(channel, reader)


async def test_notifications_past_the_queue_stop_the_reader_until_it_drains(speedups: Any) -> None:
    methods = Held()
    channel, reader, peer = await serve(methods, speedups, maxsize=4, max_pending_requests=2, max_queued_requests=2)
    for _ in range(5):
        await peer.send(notification("wait"))
    await until(lambda: channel.reading_paused)
    assert channel.overflowed_notifications == 1 and channel.queued_count == 3
    methods.gate.set()
    await until(lambda: not channel.reading_paused and len(methods.ran) == 5)
    assert channel.dropped_notifications == 0
    await stop(channel, reader)


async def test_a_handler_that_cancels_its_task_does_not_cancel_the_next_call(speedups: Any) -> None:
    channel, reader, peer = await serve(Held(), speedups)
    # Fed in one go: both calls share one run (one task).
    channel.feed(request(1, "self_cancel"))
    channel.feed(request(2, "naps"))
    channel.feed(request(3, "add", a=1, b=2))
    answers = {}
    for _ in range(3):
        answer = json.loads(await peer.receive())
        answers[answer["id"]] = answer
    assert answers[1]["result"] == "cancelled my task"
    assert answers[2]["result"] == "napped"
    assert answers[3]["result"] == 3
    await until(lambda: channel.running_count == 0)
    await stop(channel, reader)


async def test_items_of_unknown_streams_make_one_cancel_each_at_most(speedups: Any) -> None:
    channel, reader, peer = await serve(Held(), speedups, maxsize=10_000)
    for i in range(2_000):
        await peer.send(notification("$/stream.item", stream=7, item=i))
    await peer.send(request(1, "add", a=1, b=1))
    frames = []
    while True:
        frame = json.loads(await peer.receive())
        frames.append(frame)
        if frame.get("id") == 1:
            break
    cancels = [f for f in frames if f.get("method") == "$/stream.cancel"]
    assert cancels == [{"jsonrpc": "2.0", "method": "$/stream.cancel", "params": {"stream": 7}}]
    await stop(channel, reader)


async def test_malformed_stream_ends_are_that_messages_fault_not_the_readers(speedups: Any) -> None:
    channel, reader, peer = await serve(Held(), speedups)
    bad = [
        notification("$/stream.end", stream=1, error={"code": "oops", "message": "m"}),
        notification("$/stream.end", stream=1, error="not an object"),
        notification("$/stream.credit", stream=[1], credits="many"),
        notification("$/stream.cancel", stream={"a": 1}),
        json.dumps({"jsonrpc": "2.0", "method": "$/stream.end", "params": [1, 2]}),
        json.dumps({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": [[1]]}),
        json.dumps({"jsonrpc": "2.0", "method": "$/meta", "params": {"id": 1, "meta": "x"}}),
    ]
    for frame in bad:
        await peer.send(frame)
    await peer.send(request(1, "add", a=2, b=2))
    assert json.loads(await peer.receive()) == {"jsonrpc": "2.0", "id": 1, "result": 4}
    assert not channel.is_closed()
    await stop(channel, reader)


async def test_a_malformed_stream_end_fails_the_consumer_with_a_clear_error(speedups: Any) -> None:
    from fastwsrpc import RpcError

    gate = asyncio.Event()

    class Producer(RpcMethodsBase):
        async def ticks(self) -> Any:
            yield 1
            await gate.wait()
            yield 2

    async with channel_pair(Producer(), RpcMethodsBase(), speedups=speedups) as (_server, client):
        stream = client.other.ticks.stream()
        iterator = stream.__aiter__()
        assert await iterator.__anext__() == 1
        (sid,) = list(client._streams.consumers)
        client.feed(notification("$/stream.end", stream=sid, error={"code": "not a number"}))
        try:
            await iterator.__anext__()
        except RpcError as exc:
            assert "malformed" in str(exc)
        else:
            raise AssertionError("the stream went on")
        gate.set()
        assert not client.is_closed()


async def test_our_cancels_reach_running_and_queued_calls(speedups: Any) -> None:
    methods = Held()
    async with channel_pair(
        methods,
        RpcMethodsBase(),
        settings=RpcSettings(max_pending_requests=4),
        client_settings=RpcSettings(max_pending_requests=100),
        speedups=speedups,
    ) as (server, client):
        running = [asyncio.ensure_future(client.other.wait(i=i)) for i in range(4)]
        await until(lambda: server.running_count == 4)
        queued = asyncio.ensure_future(client.other.wait(i=9))
        await until(lambda: server.queued_count == 1)
        queued.cancel()  # $/cancelRequest for a queued call
        for task in running:
            task.cancel()  # and for the running ones
        await until(lambda: len(methods.cancels) == 4 and server.running_count == 0 and server.queued_count == 0)
        assert 9 not in methods.ran
        assert (await client.other.add(a=1, b=2)).result == 3
