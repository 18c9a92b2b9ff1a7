"""Issue 24 (many idle connections), the small-N side: costs that must not grow with N, and fan-out.

benchmarks/scale.py measures the real thing (100,000 connections, RSS, CPU,
latency); these tests pin what it relies on, in memory and in a few seconds:

* an idle connection (a server channel whose reader waits) costs the same
  Python heap at 200 and at 1,000 connections, and so does a subscription;
* the hub encodes a publication once for its subscribers, not once each
  (tests/test_fanout.py: once end to end, the frames written past the tasks).

The bytes are tracemalloc's (Python allocations), measured around the
creation of N objects after a garbage collection; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from types import SimpleNamespace
from typing import Any, Callable, List, Tuple

import msgspec
import pytest

from fastwsrpc import RpcChannel, RpcMethodsBase, RpcSettings
from fastwsrpc.testing import memory_pair
from fastwsrpc.topics import TopicHub

#: Per-object cost at the larger N may exceed the smaller N's by this factor (plus a few bytes):
#: dicts and sets that hold all of them grow by doubling, which N=200 and N=1,000 land on differently.
TOLERANCE = 1.25
SLACK = 64


class StandIn:
    """What a subscription needs of its channel: an id, a peer name, and close."""

    def __init__(self) -> None:
        self.id = "stand-in"
        self.socket = SimpleNamespace(peer="test")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


async def heap_per_object(make: Callable[[int], Any], n: int) -> Tuple[float, Any]:
    """Python heap grown by ``make(n)`` (which builds n objects), per object; and what it built."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = await make(n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / n, built


async def idle_channels(n: int) -> List[Tuple[RpcChannel, Any, asyncio.Task[None]]]:
    """n server channels on memory pairs, each with a topic hub and its reader waiting (idle)."""
    hub = TopicHub()
    settings = RpcSettings()
    held = []
    for _ in range(n):
        server, peer = memory_pair()
        channel = RpcChannel(RpcMethodsBase(), server, settings=settings, topics=hub)
        held.append((channel, peer, asyncio.ensure_future(channel.run())))
    await asyncio.sleep(0)  # every reader is now parked in receive(), as an idle connection's is
    return held


async def close_all(held: List[Tuple[RpcChannel, Any, asyncio.Task[None]]]) -> None:
    for channel, _, _ in held:
        channel.abort("test over")
    await asyncio.gather(*(task for _, _, task in held), return_exceptions=True)


async def test_an_idle_connection_costs_the_same_at_200_and_1000() -> None:
    small, held = await heap_per_object(idle_channels, 200)
    await close_all(held)
    large, held = await heap_per_object(idle_channels, 1000)
    await close_all(held)
    assert small > 0
    assert large <= small * TOLERANCE + SLACK, f"{small:.0f} B per idle channel at 200, {large:.0f} B at 1000"


async def test_a_subscription_costs_the_same_at_200_and_1000() -> None:
    hub = TopicHub()

    async def subscribe(n: int) -> List[Any]:
        return [hub.subscribe(StandIn(), ["t"]) for _ in range(n)]  # type: ignore[arg-type]

    small, subs = await heap_per_object(subscribe, 200)
    for events in subs:
        await events.aclose()
    assert hub.subscriber_count() == 0
    large, subs = await heap_per_object(subscribe, 1000)
    assert hub.subscriber_count("t") == 1000
    for events in subs:
        await events.aclose()
    assert small > 0
    assert large <= small * TOLERANCE + SLACK, f"{small:.0f} B per subscription at 200, {large:.0f} B at 1000"


async def test_a_publication_is_encoded_once_by_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """With history, the hub encodes the publication once (the body it keeps), whatever the subscribers."""
    calls: List[Any] = []
    real = msgspec.json.encode

    def counting(value: Any, **kwargs: Any) -> bytes:
        calls.append(value)
        return real(value, **kwargs)

    hub = TopicHub(history=10)
    subs = [hub.subscribe(StandIn(), ["t"]) for _ in range(500)]  # type: ignore[arg-type]
    monkeypatch.setattr(msgspec.json, "encode", counting)
    await hub.publish("t", {"price": 1})
    monkeypatch.undo()
    assert calls == [{"price": 1}]
    assert all(len(events._sub.queue) == 1 for events in subs)
    for events in subs:
        await events.aclose()
