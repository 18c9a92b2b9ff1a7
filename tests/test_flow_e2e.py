"""Issue 10's floods against a real server process, its RSS read from /proc.

Each test floods one connection and watches the server from a second one
(``stats``): the flooded connection must stop being read (TCP pushes back),
what the server holds must stay within the budget, and nothing may be refused
or lost once the flooding peer behaves. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from typing import Any, Dict, Iterator, List

import pytest
from websockets.asyncio.client import ClientConnection, connect

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc"),
]

MB = 1024 * 1024
#: The budget: max_pending_requests (1000) handlers, plus a batch, plus the server's own tasks.
TASK_BOUND = 1000 + 1000 + 50


class FloodServer:
    """tests/flood_app.py in its own process, on a socket bound here and inherited."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.flood_app", "--fd", str(fd)], cwd=root, pass_fds=(fd,)
        )

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.sock.close()


@pytest.fixture
def flood_server() -> Iterator[FloodServer]:
    server = FloodServer()
    try:
        yield server
    finally:
        server.stop()


async def watcher(server: FloodServer) -> WebSocketRpcClient:
    """The second connection, retrying while the server process starts."""
    from fastwsrpc import RpcRetryConfig

    client = WebSocketRpcClient(
        server.url(), RpcMethodsBase(), retry_config=RpcRetryConfig(max_attempts=200, min_wait=0.02, max_wait=0.1)
    )
    await client.__connect__()
    return client


async def stats(client: WebSocketRpcClient) -> Dict[str, Any]:
    return (await client.other.stats()).result  # type: ignore[no-any-return]


async def until_stats(client: WebSocketRpcClient, predicate: Any, polls: int = 2000) -> Dict[str, Any]:
    """Poll the server (another process: there is no event to wait on) until ``predicate(stats)``."""
    for _ in range(polls):
        current = await stats(client)
        if predicate(current):
            return current
        await asyncio.sleep(0.01)
    raise AssertionError(f"server never reached the expected state; last stats: {current}")


def frame(i: int, method: str, params: Dict[str, Any], notify: bool = False) -> str:
    message: Dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if not notify:
        message["id"] = i
    return json.dumps(message)


async def send_all(ws: ClientConnection, frames: List[str], sent: List[int]) -> None:
    for data in frames:
        await ws.send(data)
        sent[0] += 1


async def test_a_client_that_never_reads_cannot_grow_the_server(flood_server: FloodServer) -> None:
    watch = await watcher(flood_server)
    baseline = (await stats(watch))["rss"]
    # No permessage-deflate: "x" * 512 deflates to a few bytes, and 100,000 such
    # answers fit in the kernel's socket buffers, so the pipe would never fill.
    async with connect(flood_server.url(), max_size=None, compression=None) as ws:
        sent = [0]
        sender = asyncio.ensure_future(send_all(ws, [frame(i, "pad", {"i": i}) for i in range(100_000)], sent))
        # The server stops reading it (its answers cannot go out); what the
        # client sent meanwhile waits in the kernel's socket buffers, not in ours.
        # Calls read past the running budget and its queue were refused (-32001).
        during = await until_stats(watch, lambda s: s["paused"] == 1)
        grown = during["rss"] - baseline
        assert grown < 30 * MB, f"server RSS grew by {grown / MB:.1f} MB"
        assert during["tasks"] < TASK_BOUND
        # Now it reads: every call gets exactly one answer, a result or -32001.
        ids = set()
        refused = 0
        for _ in range(100_000):
            answer = json.loads(await ws.recv())
            ids.add(answer["id"])
            if "error" in answer:
                assert answer["error"]["code"] == -32001, answer
                refused += 1
            else:
                assert "result" in answer, answer
        await sender
        assert len(ids) == 100_000
        after = await until_stats(watch, lambda s: s["running"] == 0 and s["sending"] == 0)
        assert after["paused"] == 0 and after["refused"] == refused
    print(f"\nnever-reading client, 100k calls: server RSS +{grown / MB:.1f} MB, {during['tasks']} tasks while paused")
    await watch.close()


async def test_notifications_to_an_awaiting_handler_are_bounded_and_all_delivered(flood_server: FloodServer) -> None:
    watch = await watcher(flood_server)
    baseline = (await stats(watch))["rss"]
    async with connect(flood_server.url()) as ws:
        sent = [0]
        notes = [frame(i, "held", {"i": i}, notify=True) for i in range(50_000)]
        sender = asyncio.ensure_future(send_all(ws, [*notes, frame(1, "add", {"a": 1, "b": 2})], sent))
        during = await until_stats(watch, lambda s: s["paused"] == 1 and s["running"] == 1000)
        grown = during["rss"] - baseline
        assert grown < 30 * MB, f"server RSS grew by {grown / MB:.1f} MB"
        assert during["tasks"] < TASK_BOUND
        assert (await watch.other.release()).result >= 0
        # The call behind 50,000 notifications is answered, not refused.
        assert json.loads(await asyncio.wait_for(ws.recv(), 60)) == {"jsonrpc": "2.0", "id": 1, "result": 3}
        await sender
        final = await until_stats(watch, lambda s: s["noted"] == 50_000)
        assert final["dropped"] == 0 and final["refused"] == 0
    print(f"\n50k notifications to an awaiting handler: server RSS +{grown / MB:.1f} MB, {during['tasks']} tasks")
    await watch.close()


async def test_batches_count_against_the_budget(flood_server: FloodServer) -> None:
    watch = await watcher(flood_server)
    baseline = (await stats(watch))["rss"]
    async with connect(flood_server.url(), max_size=None) as ws:
        # One huge batch of cheap calls is refused whole: -32600, nothing run.
        huge = "[" + ",".join(frame(i, "add", {"a": i, "b": 1}) for i in range(100_000)) + "]"
        await ws.send(huge)
        refused = json.loads(await ws.recv())
        assert refused["error"]["code"] == -32600
        # Ten batches of 1,000 slow calls: one is admitted whole, the rest are queued.
        sent = [0]
        batches = ["[" + ",".join(frame(k * 1000 + i, "held", {"i": i}) for i in range(1000)) + "]" for k in range(10)]
        sender = asyncio.ensure_future(send_all(ws, batches, sent))
        during = await until_stats(watch, lambda s: s["queued"] == 9)
        assert during["running"] <= 1000 + 999 and during["tasks"] < TASK_BOUND
        grown = during["rss"] - baseline
        assert grown < 30 * MB, f"server RSS grew by {grown / MB:.1f} MB"
        await watch.other.release()
        answers = 0
        for _ in range(10):
            answers += len(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        await sender
        assert answers == 10_000
    print(f"\nbatches: server RSS +{grown / MB:.1f} MB, {during['running']} running at most")
    await watch.close()
