"""The cluster across real processes: uvicorn nodes sharing a real Redis or NATS.

Each node is ``python -m tests.cluster_app`` on a free loopback port; clients are
real WebSocket clients. What only separate processes show is here: calls across
nodes both ways with a callback in the middle, a broadcast to 1,000 connections
over two nodes received exactly once each, groups, a node SIGKILLed (its presence
expires, calls routed to it fail and never hang) and the broker restarted under
traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

import pytest
from websockets.asyncio.client import ClientConnection, connect

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient

from .brokers import BrokerServer, bounded, eventually, free_port, nats_server, own_broker, redis_server  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TTL, HEARTBEAT = 2.0, 0.3


class NodeProcess:
    """A cluster node (``tests.cluster_app``) in its own process, stopped by PID."""

    def __init__(self, broker_url: str, namespace: str) -> None:
        self.broker_url = broker_url
        self.namespace = namespace
        self.port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{client_id}"

    def start(self) -> NodeProcess:
        cmd = [sys.executable, "-m", "tests.cluster_app", "--port", str(self.port), "--broker", self.broker_url]
        cmd += ["--namespace", self.namespace, "--ttl", str(TTL), "--heartbeat", str(HEARTBEAT)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node process exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)  # polling interval of a bounded readiness loop
        raise RuntimeError("node process did not start")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the broker, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def broker_url(request: Any) -> str:
    kind = request.param
    return f"{request.getfixturevalue(f'{kind}_server').url}"


@pytest.fixture
def start_nodes(request: Any) -> Any:
    made: List[NodeProcess] = []

    namespace = f"t{uuid.uuid4().hex[:12]}"  # each test its own cluster on the shared broker

    def start(url: str, count: int = 2) -> List[NodeProcess]:
        nodes = [NodeProcess(url, namespace) for _ in range(count)]
        for node in nodes:
            made.append(node.start())
        return nodes

    yield start
    for node in made:
        node.kill()


class ClientMethods(RpcMethodsBase):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.heard: List[Any] = []

    async def whoami(self) -> str:
        return self.name

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def hear(self, text: Any = None) -> None:
        self.heard.append(text)

    async def sleep(self, seconds: float) -> str:
        self.heard.append("sleeping")
        await asyncio.sleep(seconds)
        return "slept"

    async def ask_server(self, method: str, params: Any = None) -> Any:
        assert self.channel is not None
        return (await self.channel.call(method, params)).result


class Clients:
    """Opens named clients on nodes; closes them all at the end."""

    def __init__(self) -> None:
        self.open: List[WebSocketRpcClient] = []
        self.methods: Dict[str, ClientMethods] = {}

    async def __call__(self, node: NodeProcess, name: str) -> WebSocketRpcClient:
        methods = ClientMethods(name)
        client = WebSocketRpcClient(node.url(name), methods, retry_config=False, default_response_timeout=30)
        await bounded(client.__aenter__())
        self.open.append(client)
        self.methods[name] = methods
        return client

    async def close(self) -> None:
        for client in self.open:
            try:
                await bounded(client.__aexit__(None, None, None), 10)
            except Exception:
                pass


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    made = Clients()
    yield made
    await made.close()


async def rpc(client: WebSocketRpcClient, name: str, **params: Any) -> Any:
    return (await bounded(client.call(name, params))).result


def lists(client: WebSocketRpcClient, *ids: str, group: Optional[str] = None) -> Callable[[], Any]:
    async def check() -> bool:
        answer = await rpc(client, "clients", group=group)
        return "result" in answer and set(ids) <= set(answer["result"])

    return check


BROKERS = pytest.mark.parametrize("broker_url", ["redis", "nats"], indirect=True)


@BROKERS
async def test_calls_across_nodes_both_ways_with_a_callback(broker_url: str, start_nodes: Any, clients: Any) -> None:
    a, b = start_nodes(broker_url)
    alice = await clients(a, "alice")
    bob = await clients(b, "bob")
    await eventually(lists(alice, "alice", "bob"))
    await eventually(lists(bob, "alice", "bob"))
    assert await rpc(alice, "route", client_id="bob", method="add", params=[2, 3]) == {"result": 5}
    assert await rpc(bob, "route", client_id="alice", method="whoami") == {"result": "alice"}
    # alice -> node a -> bob (node b) -> node b -> alice (node a) -> answers, all while waiting.
    nested = await rpc(
        alice,
        "route",
        client_id="bob",
        method="ask_server",
        params={"method": "route", "params": {"client_id": "alice", "method": "whoami"}},
    )
    assert nested == {"result": {"result": "alice"}}
    missing = await rpc(alice, "route", client_id="nobody", method="whoami")
    assert missing["error"] == "RpcClientNotFoundError"
    assert (await rpc(bob, "notify_client", client_id="alice", method="hear", params=["psst"])) == {"result": None}
    await eventually(lambda: clients.methods["alice"].heard == ["psst"])


@BROKERS
async def test_broadcast_to_1000_connections_over_two_nodes(broker_url: str, start_nodes: Any, clients: Any) -> None:
    """Each connection gets the broadcast exactly once; the time until the last has it is printed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    a, b = start_nodes(broker_url)
    control = await clients(a, "control")
    count = 1000
    conns: List[ClientConnection] = []
    try:
        for i in range(count):
            conns.append(await bounded(connect((a if i % 2 else b).url(f"w{i}"), compression=None)))
        ids = [f"w{i}" for i in range(count)]
        await eventually(lists(control, *ids), timeout=60)
        heard: List[List[Any]] = [[] for _ in conns]

        async def read_until(index: int, word: str) -> None:
            while word not in heard[index]:
                frame = json.loads(await conns[index].recv())
                heard[index].append(frame["params"][0])

        start = time.perf_counter()
        assert await rpc(control, "broadcast", method="hear", params=["hello"]) == {"result": None}
        await bounded(asyncio.gather(*(read_until(i, "hello") for i in range(count))), 60)
        elapsed = time.perf_counter() - start
        # A second broadcast behind the first: a duplicate of "hello" would arrive before it.
        await rpc(control, "broadcast", method="hear", params=["end"])
        await bounded(asyncio.gather(*(read_until(i, "end") for i in range(count))), 60)
        assert all(h == ["hello", "end"] for h in heard), [h for h in heard if h != ["hello", "end"]][:5]
        assert clients.methods["control"].heard[:1] == ["hello"]
        print(f"\nbroadcast to {count} connections over two nodes: the last had it after {elapsed * 1000:.0f} ms")
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


@BROKERS
async def test_groups_across_processes(broker_url: str, start_nodes: Any, clients: Any) -> None:
    a, b = start_nodes(broker_url)
    a1, a2 = await clients(a, "a1"), await clients(a, "a2")
    b1 = await clients(b, "b1")
    await eventually(lists(a1, "a1", "a2", "b1"))
    assert await rpc(a1, "join", client_id="b1", group="room") == {"result": None}
    assert await rpc(b1, "join", client_id="a1", group="room") == {"result": None}
    await eventually(lists(a2, "a1", "b1", group="room"))
    assert await rpc(a2, "broadcast", method="hear", params=["room only"], group="room") == {"result": None}
    await eventually(lambda: clients.methods["a1"].heard == ["room only"] == clients.methods["b1"].heard)
    assert await rpc(a2, "leave", client_id="a1", group="room") == {"result": None}
    await eventually(lambda: _members(a2, "room", ["b1"]))
    assert clients.methods["a2"].heard == []


async def _members(client: WebSocketRpcClient, group: str, expected: List[str]) -> bool:
    return bool((await rpc(client, "clients", group=group)) == {"result": expected})


@BROKERS
async def test_presence_expires_after_a_node_is_killed(broker_url: str, start_nodes: Any, clients: Any) -> None:
    a, b = start_nodes(broker_url)
    alice = await clients(a, "alice")
    await clients(b, "victim")
    await eventually(lists(alice, "alice", "victim"))
    waiting = asyncio.ensure_future(rpc(alice, "route", client_id="victim", method="sleep", params=[60]))
    await eventually(lambda: clients.methods["victim"].heard == ["sleeping"])
    b.kill()
    # The call that was waiting on the dead node fails; it does not hang.
    outcome = await bounded(waiting, 30)
    assert outcome.get("error") in ("RpcChannelClosedError", "RpcNodeGoneError", "RpcTimeoutError"), outcome
    # New calls fail at once; within the TTL the victim is gone from the cluster.
    again = await rpc(alice, "route", client_id="victim", method="whoami")
    assert again.get("error") in ("RpcNodeGoneError", "RpcChannelClosedError", "RpcClientNotFoundError"), again
    await eventually(lambda: _not_listed(alice, "victim"), timeout=TTL + 10)
    gone = await rpc(alice, "route", client_id="victim", method="whoami")
    assert gone.get("error") == "RpcClientNotFoundError", gone
    assert await rpc(alice, "route", client_id="alice", method="whoami") == {"result": "alice"}


async def _not_listed(client: WebSocketRpcClient, client_id: str) -> bool:
    answer = await rpc(client, "clients")
    return "result" in answer and client_id not in answer["result"]


@pytest.mark.parametrize("own_broker", ["redis", "nats"], indirect=True)
async def test_broker_restarted_under_traffic(own_broker: BrokerServer, start_nodes: Any, clients: Any) -> None:  # noqa: F811
    a, b = start_nodes(own_broker.url)
    alice = await clients(a, "alice")
    await clients(b, "bob")
    await eventually(lists(alice, "alice", "bob"))
    outcomes: Dict[str, int] = {}
    stop = asyncio.Event()

    async def traffic() -> None:
        for i in range(100_000):  # bounded; ends when the test says so
            if stop.is_set():
                return
            answer = await rpc(alice, "route", client_id="bob", method="add", params=[i, 1])
            key = "ok" if answer.get("result") == i + 1 else answer.get("error", "wrong")
            outcomes[key] = outcomes.get(key, 0) + 1
            if key != "ok":
                await asyncio.sleep(0.01)  # pacing while failing fast, not a wait for an event

    runner = asyncio.ensure_future(traffic())
    try:
        await eventually(lambda: outcomes.get("ok", 0) >= 20)
        own_broker.stop()
        await eventually(lambda: outcomes.get("RpcBrokerUnavailableError", 0) >= 5)
        # Same-node calls keep working while the broker is down.
        assert await rpc(alice, "route", client_id="alice", method="whoami") == {"result": "alice"}
        ok_before = outcomes.get("ok", 0)
        own_broker.start()
        await eventually(lambda: outcomes.get("ok", 0) >= ok_before + 20, timeout=30)
    finally:
        stop.set()
        await bounded(runner)
    # While the nodes come back one after the other, a call may find the other node not yet
    # resubscribed (RpcNodeGoneError, an RpcChannelClosedError) or its client not yet
    # re-announced (Redis forgot everything): all fail fast, none hangs or answers wrong.
    allowed = {"ok", "RpcBrokerUnavailableError", "RpcNodeGoneError", "RpcClientNotFoundError"}
    assert set(outcomes) <= allowed, outcomes
