"""Deploys without drops: two native nodes behind one broker, restarted in turn with SIGTERM.

200 clients know both URLs, hold a subscription to a topic with history, and
make idempotent calls the whole time. Each node in turn drains (1012) and
comes back. No call fails, no event is lost or repeated, every client ends
connected. Every loop and wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from fastwsrpc import RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient
from fastwsrpc.cluster import Cluster, broker_from_url
from fastwsrpc.topics import TopicHub

from .brokers import nats_server, redis_server  # noqa: F401  (fixtures)
from .support import free_port

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS = 200


class Node:
    """One node process, started (and started again) on its own port."""

    def __init__(self, url: str, namespace: str) -> None:
        self.port = free_port()
        self.broker, self.namespace = url, namespace
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.rolling_app", str(self.port), self.broker, self.namespace]
        self.proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # run() says where it listens once it does
            if "serving on" in line:
                return
        raise AssertionError("the node exited before it listened")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)

    def terminate(self) -> None:
        """SIGTERM: the node drains, then exits."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, self.proc.returncode


@pytest.mark.parametrize("broker", ["redis", "nats"])
async def test_a_rolling_restart_drops_nothing(broker: str, request: Any) -> None:
    url = request.getfixturevalue(f"{broker}_server").url
    namespace = f"rolling-{broker}"
    nodes = [Node(url, namespace), Node(url, namespace)]
    publisher = Cluster(broker_from_url(url, namespace=namespace))
    topics = TopicHub(history=100_000)
    topics.attach(publisher)
    retry = RpcRetryConfig(max_attempts=100, min_wait=0.02, max_wait=0.2)
    clients: List[WebSocketRpcClient] = []
    try:
        for node in nodes:
            node.start()
        urls = [nodes[0].url, nodes[1].url]
        for i in range(CLIENTS):  # half start on each node
            clients.append(
                WebSocketRpcClient(
                    urls if i % 2 == 0 else urls[::-1],
                    RpcMethodsBase(),
                    auto_reconnect=True,
                    reconnect_delay=0.2,
                    max_reconnect_attempts=100,
                    retry_config=retry,
                    default_response_timeout=60,
                )
            )
        await asyncio.gather(*(c.__aenter__() for c in clients))
        subscriptions = [c.subscribe("deploys") for c in clients]
        await asyncio.gather(*(s.open() for s in subscriptions))
        received: List[List[int]] = [[] for _ in clients]
        failures: List[BaseException] = []
        jumps: List[Any] = []
        calls: Dict[int, int] = {}
        stop = asyncio.Event()

        async def consume(i: int) -> None:
            while True:  # until cancelled, once every client has every event
                event = await subscriptions[i].next()
                assert not event.is_notice, event
                if received[i] and event.data != received[i][-1] + 1:
                    jumps.append((i, received[i][-1], event.data, event.offset, subscriptions[i].resubscribes))
                received[i].append(event.data)

        async def keep_calling(i: int) -> None:
            n = 0
            while not stop.is_set():
                try:
                    assert (await clients[i].call("echo", {"n": n}, idempotent=True)).result == n
                    calls[i] = calls.get(i, 0) + 1
                except BaseException as exc:  # every failure is kept and reported
                    failures.append(exc)
                    return
                n += 1
                await asyncio.sleep(0.05)  # pacing: about 20 calls a second per client

        published = [0]

        async def publish() -> None:
            while not stop.is_set():
                await topics.publish("deploys", published[0])
                published[0] += 1
                await asyncio.sleep(0.01)

        consumers = [asyncio.ensure_future(consume(i)) for i in range(CLIENTS)]
        callers = [asyncio.ensure_future(keep_calling(i)) for i in range(CLIENTS)]
        publishing = asyncio.ensure_future(publish())
        loop = asyncio.get_running_loop()
        for node in nodes:  # the rolling restart: one node at a time
            await loop.run_in_executor(None, node.terminate)
            await loop.run_in_executor(None, node.start)
        stop.set()
        await asyncio.wait_for(publishing, 10)
        await asyncio.wait_for(asyncio.gather(*callers), 60)
        for _ in range(600):  # bounded: 60 s at most for the last events to arrive everywhere
            if all(len(r) >= published[0] for r in received) or any(c.done() for c in consumers):
                break
            await asyncio.sleep(0.1)
        for consumer in consumers:
            if consumer.done():
                consumer.result()  # an assertion inside a consumer fails the test here
            consumer.cancel()
        behind = [(i, len(received[i])) for i in range(CLIENTS) if len(received[i]) < published[0]]
        detail = [
            (i, n, clients[i].uri, subscriptions[i].resubscribes, received[i][:3], received[i][-3:]) for i, n in behind
        ]
        assert not jumps, f"holes or repeats: {jumps[:10]}"
        assert not behind, f"{len(behind)} clients behind {published[0]} events: {detail[:5]}"
        assert not failures, failures[:3]
        assert all(calls.get(i, 0) > 0 for i in range(CLIENTS))
        for i in range(CLIENTS):
            assert received[i] == list(range(published[0])), (i, len(received[i]), published[0])
        assert all(c.is_connected for c in clients)
        assert sum(c.reconnects for c in clients) >= CLIENTS  # each client moved at least once
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await publisher.close()
        for node in nodes:
            node.stop()
