"""Topic recovery across processes: publish on one node, lose it, recover on another.

Two ``tests.cluster_app`` nodes share a real Redis (history in Redis Streams) or
NATS (history in JetStream). A raw WebSocket client has node A publish, node A is
SIGKILLed, and a second raw client resubscribes on node B with ``since``: it gets
exactly the publications after its position, from the broker's history, which no
node holds in memory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional

import pytest
from websockets.asyncio.client import ClientConnection, connect

from .brokers import free_port, nats_server, redis_server  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [pytest.mark.e2e]


class HistoryNode:
    """A ``tests.cluster_app`` node with topic history, in its own process (killed by PID)."""

    def __init__(self, broker_url: str, namespace: str, history: int) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "tests.cluster_app", "--port", str(self.port), "--broker", broker_url]
        cmd += ["--namespace", namespace, "--ttl", "2", "--heartbeat", "0.3", "--history", str(history)]
        self.proc: Optional[subprocess.Popen[bytes]] = subprocess.Popen(cmd, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node process exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)  # polling interval of a bounded readiness loop
        raise RuntimeError("node process did not start")

    def url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{client_id}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(params=["redis", "nats"])
def two_nodes(request: Any) -> Iterator[List[HistoryNode]]:
    url = request.getfixturevalue(f"{request.param}_server").url
    namespace = f"r{uuid.uuid4().hex[:12]}"
    nodes: List[HistoryNode] = []
    try:
        nodes = [HistoryNode(url, namespace, 500), HistoryNode(url, namespace, 500)]
        yield nodes
    finally:
        for node in nodes:
            node.kill()


class RawClient:
    """JSON-RPC written by hand on a WebSocket, as a client in any language would."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, message: Dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"jsonrpc": "2.0", **message}))

    async def receive(self) -> Dict[str, Any]:
        message: Dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
        return message

    async def call(self, method: str, params: Any) -> Any:
        number = next(self.ids)
        await self.send({"id": number, "method": method, "params": params})
        while True:
            message = await self.receive()
            if message.get("id") == number:
                return message["result"]


async def test_a_subscriber_recovers_on_another_node_after_its_node_died(two_nodes: List[HistoryNode]) -> None:
    a, b = two_nodes
    async with connect(a.url("publisher")) as ws:
        positions = await RawClient(ws).call("publish", {"topic": "news", "count": 300, "first": 1})
    epoch = positions[0][0]
    assert [p[1] for p in positions] == list(range(1, 301)) and {p[0] for p in positions} == {epoch}
    a.kill()  # SIGKILL: the node that published is gone, its memory with it
    async with connect(b.url("subscriber")) as ws:
        client = RawClient(ws)
        since = {"news": {"epoch": epoch, "offset": 100}}
        await client.send({"id": 99, "method": "$/subscribe", "params": {"topics": ["news"], "since": since}})
        assert (await client.receive())["result"] == {"stream": 99}
        await client.send({"method": "$/stream.credit", "params": {"stream": 99, "window": 1000}})
        items: List[Dict[str, Any]] = []
        while len(items) < 201:
            message = await client.receive()
            assert message["method"] == "$/stream.item"
            items.append(message["params"]["item"])
        assert items[0] == {"topic": "news", "recovered": True, "epoch": epoch, "offset": 300, "missed": 200}
        assert [(i["offset"], i["data"]) for i in items[1:]] == [(n, n) for n in range(101, 301)]
