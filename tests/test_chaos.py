"""Chaos: a link that drops every 0.2-1 s while events flow and idempotent calls run. Nothing is lost.

The issue's "done when" for durability: 10,000 events published at about
1,000/s on a topic with history, 5,000 idempotent calls to a method that
counts its executions, and a TCP proxy between client and server that cuts
every connection at random intervals. The client must receive every event, in
order, none twice, and every call must have exactly one result and one
execution. Bounded: the publisher and the calls end, the cutter stops with
them, every wait has a limit.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from typing import Any, Dict, List

import pytest

from fastwsrpc import RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient
from fastwsrpc.server import WebSocketRpcServer

from .brokers import nats_server, redis_server  # noqa: F401  (fixtures)
from .support import NativeServerThread, TcpProxy

pytestmark = pytest.mark.e2e

EVENTS = 10_000
CALLS = 5_000


class Counted(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.executions: Counter[int] = Counter()
        self.lock = threading.Lock()

    async def count(self, n: int) -> int:
        with self.lock:
            self.executions[n] += 1
        await asyncio.sleep(0)  # a real await: the answer may be lost in flight
        return n


async def publish_all(server: WebSocketRpcServer) -> None:
    for i in range(EVENTS):
        await server.publish("ticks", i)
        if i % 10 == 9:
            await asyncio.sleep(0.01)  # about 1,000 a second


@pytest.mark.parametrize("broker", ["local", "redis", "nats"])
async def test_nothing_is_lost_over_a_link_that_keeps_dropping(broker: str, request: Any) -> None:
    methods = Counted()
    options: Dict[str, Any] = {}
    if broker != "local":
        from fastwsrpc.cluster import broker_from_url

        url = request.getfixturevalue(f"{broker}_server").url
        options["broker"] = broker_from_url(url, namespace=f"chaos-{broker}")
    server = WebSocketRpcServer(methods, topic_history=EVENTS, **options)
    rng = random.Random(20261206)
    with NativeServerThread(server) as srv:
        proxy = await TcpProxy(srv.port).start()
        cuts = 0
        try:
            retry = RpcRetryConfig(max_attempts=200, min_wait=0.01, max_wait=0.05)
            client = WebSocketRpcClient(
                proxy.url(), RpcMethodsBase(), auto_reconnect=True, reconnect_delay=0.01, retry_config=retry,
                max_reconnect_attempts=200, default_response_timeout=120,
            )  # fmt: skip
            async with client:
                subscription = client.subscribe("ticks")
                await subscription.open()
                received: List[int] = []

                async def consume() -> None:
                    while len(received) < EVENTS:
                        event = await subscription.next()
                        assert not event.is_notice, f"a gap after {len(received)} events: {event}"
                        assert event.data == len(received), (event.data, len(received))
                        received.append(event.data)

                results: Dict[int, int] = {}
                gate = asyncio.Semaphore(64)

                async def one(n: int) -> None:
                    async with gate:
                        results[n] = (await client.call("count", {"n": n}, idempotent=True)).result

                assert srv.loop is not None
                publisher = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(publish_all(server), srv.loop))
                consumer = asyncio.ensure_future(consume())
                calls = asyncio.ensure_future(asyncio.gather(*(one(n) for n in range(CALLS))))
                for _ in range(200):  # bounded: about 30 s of cuts at most
                    if publisher.done() and calls.done():
                        break
                    both: List[asyncio.Future[Any]] = [publisher, calls]
                    await asyncio.wait(both, timeout=rng.uniform(0.2, 1.0))
                    if not (publisher.done() and calls.done()):
                        proxy.cut()
                        cuts += 1
                await asyncio.wait_for(publisher, 60)
                await asyncio.wait_for(calls, 120)
                await asyncio.wait_for(consumer, 120)
                await subscription.aclose()
        finally:
            await proxy.close()
    print(f"\nchaos: {cuts} cuts, {client.reconnects} reconnects, {subscription.resubscribes} resubscribes")
    assert cuts >= 3 and client.reconnects >= 3
    assert received == list(range(EVENTS))
    assert results == {n: n for n in range(CALLS)}
    assert set(methods.executions) == set(range(CALLS)) and set(methods.executions.values()) == {1}
