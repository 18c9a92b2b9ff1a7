"""The budget of one connection, on a memory pair (no network): issue 10's cases.

Each test plays a hostile or simply busy peer against a channel and checks
that what the channel holds (tasks, queued work, frames waiting to be sent)
stays within the configured limits, that TCP-like pushback reaches the peer,
and that nothing is lost or refused when the peer stays within the limits.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
from typing import Any, Dict, List, Tuple

from fastwsrpc import RpcMethodsBase, RpcServerOverloadedError, RpcSettings
from fastwsrpc.channel import RpcChannel
from fastwsrpc.testing import MemoryTransport, channel_pair, memory_pair, until


class Gate(RpcMethodsBase):
    """Handlers that wait until the test opens the gate, so work piles up."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.seen: List[Any] = []

    async def wait(self, i: int = 0) -> int:
        await self.gate.wait()
        return i

    async def note(self, i: int = 0) -> None:
        await self.gate.wait()
        self.seen.append(i)

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def ask_back(self, i: int) -> int:
        assert self.channel is not None
        return (await self.channel.other.double(i=i)).result  # type: ignore[no-any-return]


class Doubler(RpcMethodsBase):
    async def double(self, i: int) -> int:
        return 2 * i


def request(i: int, method: str = "wait", **params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {"i": i}, "id": i})


def notification(i: int, method: str = "note") -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": {"i": i}})


async def serve(methods: RpcMethodsBase, speedups: Any, maxsize: int = 16, **limits: Any) -> Any:
    """A server channel on one end of a memory pair; the test drives the other end by hand."""
    a, b = memory_pair(maxsize)
    channel = RpcChannel(methods, a, settings=RpcSettings.resolve(**limits), speedups=speedups)
    reader = asyncio.ensure_future(channel.run())
    return channel, reader, b


async def stop(channel: RpcChannel, reader: Any) -> None:
    await channel.close()
    await reader


async def feed_all(peer: MemoryTransport, frames: List[str]) -> None:
    for frame in frames:
        await peer.send(frame)


async def test_a_peer_that_never_reads_is_pushed_back_not_buffered(speedups: Any) -> None:
    methods = Gate()
    methods.gate.set()  # handlers answer at once: only the blocked send side can stop them
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=8, max_send_queue_size=4)
    sender = asyncio.ensure_future(feed_all(peer, [request(i) for i in range(10_000)]))
    await until(lambda: channel.reading_paused)
    await until(lambda: channel.reading_paused and peer.queued == 16)
    # Reading stopped: the peer's sends block, and what the channel holds is bounded.
    assert not sender.done() and peer.sent < 100
    assert channel.running_count <= 8 and channel.sending_count <= 8 and len(channel._runner.tasks) <= 16
    assert channel.refused_calls == 0
    # The peer starts reading: every call is answered, none refused.
    answers = [json.loads(await peer.receive()) for _ in range(10_000)]
    await sender
    assert sorted(a["result"] for a in answers) == list(range(10_000))
    await stop(channel, reader)


async def test_notifications_count_against_the_budget_and_wait_rather_than_start(speedups: Any) -> None:
    methods = Gate()
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=10)
    sender = asyncio.ensure_future(feed_all(peer, [notification(i) for i in range(5_000)]))
    await until(lambda: channel.reading_paused and peer.unread == 16)
    assert channel.running_count == 10 and not sender.done()
    methods.gate.set()
    await sender
    await until(lambda: len(methods.seen) == 5_000)
    assert channel.dropped_notifications == 0
    await stop(channel, reader)


async def test_notifications_before_a_call_do_not_get_it_refused(speedups: Any) -> None:
    methods = Gate()
    methods.gate.set()
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=4)
    sender = asyncio.ensure_future(
        feed_all(peer, [notification(i) for i in range(1_000)] + [request(7, "add", a=1, b=2)])
    )
    answer = json.loads(await peer.receive())
    await sender
    assert answer == {"jsonrpc": "2.0", "id": 7, "result": 3}
    await stop(channel, reader)


async def test_garbage_frames_do_not_use_up_the_call_budget(speedups: Any) -> None:
    methods = Gate()
    methods.gate.set()
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=4, max_send_queue_size=4)

    async def client() -> List[Any]:
        return [json.loads(await peer.receive()) for _ in range(2_001)]

    answers = asyncio.ensure_future(client())
    await feed_all(peer, ["{oops"] * 2_000 + [request(5, "add", a=2, b=2)])
    got = await answers
    assert [a["error"]["code"] for a in got[:-1]] == [-32700] * 2_000
    assert got[-1]["result"] == 4
    await stop(channel, reader)


async def test_batch_items_count_and_an_oversized_batch_is_refused_whole(speedups: Any) -> None:
    methods = Gate()
    channel, reader, peer = await serve(methods, speedups, max_pending_requests=10, max_batch_size=50)
    too_big = "[" + ",".join(request(i) for i in range(51)) + "]"
    await peer.send(too_big)
    refused = json.loads(await peer.receive())
    assert refused["error"]["code"] == -32600 and "51" in refused["error"]["message"]
    batches = ["[" + ",".join(request(i + 50 * k) for i in range(50)) + "]" for k in range(10)]
    sender = asyncio.ensure_future(feed_all(peer, batches))
    await until(lambda: channel.queued_count == 9)
    # One batch admitted whole (50 items over a budget of 10), the rest queued (a message each).
    assert channel.running_count == 50 and not channel.reading_paused
    methods.gate.set()
    await sender
    results = []
    for _ in range(10):
        results += [item["result"] for item in json.loads(await peer.receive())]
    assert sorted(results) == list(range(500))
    await stop(channel, reader)


async def test_pipelined_calls_within_the_limits_are_queued_and_answered(speedups: Any) -> None:
    async with channel_pair(Gate(), RpcMethodsBase(), speedups=speedups, max_pending_requests=8) as (server, client):
        server.methods.gate.set()  # type: ignore[attr-defined]
        calls = [client.other.add(a=i, b=1) for i in range(2_000)]
        # 2,000 > the client's own outgoing limit of 8 pending would refuse: send in waves of 8.
        results: List[int] = []
        for start in range(0, len(calls), 8):
            results += [r.result for r in await asyncio.gather(*calls[start : start + 8])]
        assert results == [i + 1 for i in range(2_000)]
        assert server.refused_calls == 0


async def test_pipelining_far_past_the_handler_limit_is_not_refused(speedups: Any) -> None:
    server_settings = RpcSettings(max_pending_requests=4)
    client_settings = RpcSettings(max_pending_requests=5_000)
    async with channel_pair(
        Gate(), RpcMethodsBase(), settings=server_settings, client_settings=client_settings, speedups=speedups
    ) as (server, client):
        server.methods.gate.set()  # type: ignore[attr-defined]
        results = await asyncio.gather(*(client.other.add(a=i, b=0) for i in range(5_000)))
        assert [r.result for r in results] == list(range(5_000))
        assert server.refused_calls == 0 and server.running_count == 0


async def test_callbacks_at_a_full_budget_do_not_deadlock(speedups: Any) -> None:
    server_settings = RpcSettings(max_pending_requests=4)
    client_settings = RpcSettings(max_pending_requests=100)
    async with channel_pair(
        Gate(), Doubler(), settings=server_settings, client_settings=client_settings, speedups=speedups
    ) as (server, client):
        # Every running handler waits on a call back to the client: the server
        # must keep reading for those answers although its budget is full.
        # Within the budget plus its queue (4 + 4) nothing is refused.
        results = await asyncio.gather(*(client.other.ask_back(i=i) for i in range(8)))
        assert [r.result for r in results] == [2 * i for i in range(8)]
        assert server.refused_calls == 0
        # Far past it, the excess is refused (-32001) rather than queued without
        # bound, and every call ends: none hangs.
        outcomes = await asyncio.gather(*(client.other.ask_back(i=i) for i in range(40)), return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, RpcServerOverloadedError)]
        answered = [o.result for o in outcomes if not isinstance(o, BaseException)]
        assert len(refused) + len(answered) == 40 and len(answered) >= 8
        assert server.refused_calls == len(refused)
        assert server.running_count == 0 and not server._budget.deferred


async def test_a_full_queue_of_calls_that_finish_at_once_all_start(speedups: Any) -> None:
    # Python 3.12+ runs a handler's first step as it starts: a queue of calls that
    # finish at once (their answers fit in the pipe) once started each other from
    # inside the previous start, one stack frame deeper each: a full queue of the
    # default size overflowed the stack and left the queue stuck.
    methods = Gate()
    channel, reader, peer = await serve(methods, speedups, maxsize=5_000)
    limit = channel.settings.max_pending_requests
    # A handler waits for an answer of ours, so the reader goes on at a full budget
    # and queues what comes next (up to the limit again).
    await peer.send(request(0, "ask_back"))
    asked = json.loads(await peer.receive())
    assert asked["method"] == "double"
    await feed_all(peer, [request(i) for i in range(1, limit)])
    await feed_all(peer, [request(i, "add", a=i, b=1) for i in range(limit, 2 * limit)])
    await until(lambda: len(channel._budget.deferred) == limit)
    assert channel.running_count == limit and channel.refused_calls == 0
    methods.gate.set()
    await until(lambda: not channel._budget.deferred)
    await peer.send(json.dumps({"jsonrpc": "2.0", "id": asked["id"], "result": 0}))
    answers = [json.loads(await peer.receive()) for _ in range(2 * limit)]
    assert sorted(a["id"] for a in answers) == list(range(2 * limit))
    assert all("result" in a for a in answers)
    await until(lambda: channel.running_count == 0)
    await stop(channel, reader)


async def test_a_client_flooded_by_its_server_is_bounded_too(speedups: Any) -> None:
    client_methods = Gate()
    async with channel_pair(RpcMethodsBase(), client_methods, speedups=speedups, max_pending_requests=16) as (
        server,
        client,
    ):

        async def flood() -> None:
            for i in range(3_000):
                await server.notify("note", {"i": i})

        sender = asyncio.ensure_future(flood())
        await until(lambda: client.reading_paused)
        assert client.running_count == 16 and not sender.done()
        client_methods.gate.set()
        await sender
        await until(lambda: len(client_methods.seen) == 3_000)


async def test_a_huge_batch_is_refused_before_its_items_are_built(speedups: Any) -> None:
    methods = Gate()
    channel, reader, peer = await serve(methods, speedups, max_batch_size=1000)
    decoded: List[Any] = []
    decode = channel._protocol._decode

    def counting(frame: Any, *args: Any) -> Any:
        decoded.append(len(frame))
        return decode(frame, *args)

    channel._protocol._decode = counting
    huge = "[" + ",".join(request(i, "add", a=i, b=1) for i in range(100_000)) + "]"
    await peer.send(huge)
    refused = json.loads(await peer.receive())
    assert refused["error"]["code"] == -32600 and "100000" in refused["error"]["message"]
    assert decoded == []  # counted as raw items, never decoded into 100,000 objects
    await peer.send("[" + ",".join(request(i, "add", a=i, b=1) for i in range(3)) + "]")
    assert [a["result"] for a in json.loads(await peer.receive())] == [1, 2, 3]
    await stop(channel, reader)


# ------------------------------------------------ notifications read in a row
# They share one task until a handler suspends (see budget.py); each must still
# behave as if it had a task of its own.
_SEEN: contextvars.ContextVar[Any] = contextvars.ContextVar("seen", default=None)


class Runs(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.log: List[Any] = []
        self.tasks: Dict[int, Tuple[Any, Any]] = {}

    async def quick(self, i: int) -> None:
        self.log.append(("quick", i, _SEEN.get()))
        _SEEN.set(i)  # must not leak into the next handler

    async def slow(self, i: int) -> None:
        before = asyncio.current_task()
        self.log.append(("slow", i))
        await self.gate.wait()
        self.tasks[i] = (before, asyncio.current_task())
        self.log.append(("slow done", i))

    async def add(self, a: int, b: int) -> int:
        self.log.append(("add", a))
        return a + b

    async def timed(self, i: int) -> None:
        """asyncio.timeout (3.11+) cancels the task current when it was entered: it must be this handler's."""
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(0.01):
                    await asyncio.Event().wait()
            else:
                await asyncio.wait_for(asyncio.Event().wait(), 0.01)
        except asyncio.TimeoutError:
            self.log.append(("timed out", i))


async def test_a_suspended_notification_does_not_hold_up_the_ones_after_it(speedups: Any) -> None:
    methods = Runs()
    channel, reader, peer = await serve(methods, speedups)
    await feed_all(peer, [notification(1, "slow")] + [notification(i, "quick") for i in range(2, 6)])
    await until(lambda: len(methods.log) == 5)
    assert methods.log == [("slow", 1)] + [("quick", i, None) for i in range(2, 6)]
    assert channel.running_count == 1  # the suspended handler still holds its unit
    methods.gate.set()
    await until(lambda: channel.running_count == 0)
    assert methods.log[-1] == ("slow done", 1)
    await stop(channel, reader)


async def test_each_suspended_notification_keeps_one_task_of_its_own(speedups: Any) -> None:
    methods = Runs()
    channel, reader, peer = await serve(methods, speedups)
    await feed_all(peer, [notification(i, "slow") for i in range(3)] + [notification(9, "timed")])
    await until(lambda: ("timed out", 9) in methods.log and len(methods.log) == 4)
    methods.gate.set()
    await until(lambda: len(methods.tasks) == 3)
    for before, after in methods.tasks.values():
        assert before is after and before is not None
    assert len({before for before, _ in methods.tasks.values()}) == 3
    await until(lambda: channel.running_count == 0)
    await stop(channel, reader)


async def test_handlers_start_in_arrival_order_around_calls(speedups: Any) -> None:
    methods = Runs()
    methods.gate.set()
    channel, reader, peer = await serve(methods, speedups)
    frames = [
        notification(1, "quick"),
        request(10, "add", a=10, b=1),
        notification(2, "quick"),
        notification(3, "slow"),
    ]
    frames += [request(11, "add", a=11, b=1), notification(4, "quick")]
    await feed_all(peer, frames)
    answers = sorted([json.loads(await peer.receive())["id"] for _ in range(2)])
    assert answers == [10, 11]
    await until(lambda: channel.running_count == 0)
    order = [entry[:2] for entry in methods.log if entry[0] != "slow done"]
    assert order == [("quick", 1), ("add", 10), ("quick", 2), ("slow", 3), ("add", 11), ("quick", 4)]
    await stop(channel, reader)


async def test_a_call_cancelled_before_it_starts_never_runs(speedups: Any) -> None:
    methods = Runs()
    channel, reader, peer = await serve(methods, speedups)
    # Fed by hand in one go: the call is still queued in its run when the cancel comes.
    channel.feed(request(1, "add", a=1, b=2))
    channel.feed(json.dumps({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 1}}))
    channel.feed(request(2, "add", a=2, b=2))
    assert json.loads(await peer.receive()) == {"jsonrpc": "2.0", "id": 2, "result": 4}
    await until(lambda: channel.running_count == 0)
    assert methods.log == [("add", 2)]
    await stop(channel, reader)


async def test_a_suspended_call_is_cancelled_alone(speedups: Any) -> None:
    methods = Runs()
    channel, reader, peer = await serve(methods, speedups)
    channel.feed(request(1, "slow"))
    channel.feed(request(2, "slow"))
    await until(lambda: methods.log == [("slow", 1), ("slow", 2)])
    channel.feed(json.dumps({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 1}}))
    await until(lambda: channel.running_count == 1)
    methods.gate.set()
    assert json.loads(await peer.receive()) == {"jsonrpc": "2.0", "id": 2, "result": None}
    await until(lambda: channel.running_count == 0)
    assert list(methods.tasks) == [2]
    await stop(channel, reader)


async def test_a_run_waits_for_the_next_one_and_leaves_at_close(speedups: Any) -> None:
    methods = Runs()
    channel, reader, peer = await serve(methods, speedups)
    for i in range(3):  # one task serves run after run
        await peer.send(request(i, "add", a=i, b=1))
        assert json.loads(await peer.receive())["result"] == i + 1
    await until(lambda: channel._runner.idle is not None)
    assert len(channel._runner.tasks) == 1
    await stop(channel, reader)
    await until(lambda: not channel._runner.tasks)  # the waiting task ended with the connection
    assert channel._runner.idle is None
