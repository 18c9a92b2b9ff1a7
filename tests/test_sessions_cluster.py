"""Sessions across nodes: a client resumes its session on another node of the cluster.

Two services (nodes) share one in-process hub, as they would share Redis or
NATS; the client is played by hand on a memory pair, so each step is exact.
Every test runs on both twins. The real brokers and processes are in
``test_chaos.py`` (two nodes, one SIGKILLed).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Optional, Tuple

import pytest

from fastwsrpc import RpcMethodsBase
from fastwsrpc.cluster import LocalBroker, LocalHub
from fastwsrpc.service import RpcService
from fastwsrpc.sessions import SessionStore, record_key
from fastwsrpc.testing import MemoryTransport, memory_pair

from .support import eventually


class Work(RpcMethodsBase):
    """``slow`` waits for the test's gate; both count their runs (shared by every node)."""

    def __init__(self, runs: Counter[int], gate: asyncio.Event) -> None:
        super().__init__()
        self.runs = runs
        self.gate = gate

    async def slow(self, n: int) -> int:
        self.runs[n] += 1
        await self.gate.wait()
        return n

    async def count(self, n: int) -> int:
        self.runs[n] += 1
        return n

    async def ticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


def request(call_id: str, method: str, n: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": {"n": n}, "id": call_id})


class Cluster2:
    """Two nodes on one hub, sharing the methods' run counter and gate."""

    def __init__(self) -> None:
        self.hub = LocalHub()
        self.runs: Counter[int] = Counter()
        self.gate = asyncio.Event()
        self.nodes = [RpcService("test", Work(self.runs, self.gate), broker=LocalBroker(self.hub)) for _ in range(2)]

    async def start(self) -> None:
        for node in self.nodes:
            await node.start()

    async def close(self) -> None:
        for node in self.nodes:
            node.sessions.close()
            await node.cluster.close()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster2]:
    made = Cluster2()
    await made.start()
    try:
        yield made
    finally:
        await made.close()


@asynccontextmanager
async def connected(
    node: RpcService, session: str, speedups: Any
) -> AsyncIterator[Tuple[MemoryTransport, Optional[str], asyncio.Future[None]]]:
    """A connection to ``node`` presenting ``session``: the peer's end, the handshake's answer, the serving task."""
    opened, header = await node.open_session(session, None)
    server_end, peer = memory_pair(64)
    serving = asyncio.ensure_future(
        node.serve(
            server_end,
            context={},
            subprotocol=None,
            agreed=frozenset(),
            name=None,
            identify_with=None,
            speedups=speedups,
            session=opened,
        )
    )
    try:
        yield peer, header, serving
    finally:
        await peer.close()
        await asyncio.wait_for(serving, 10)


async def answer(peer: MemoryTransport) -> Dict[str, Any]:
    reply: Dict[str, Any] = json.loads(await asyncio.wait_for(peer.receive(), 10))
    return reply


def session_id(header: Optional[str]) -> str:
    assert header is not None
    return header.split(";")[0]


async def test_a_call_still_running_on_the_node_the_client_left_runs_once(speedups: Any, cluster: Cluster2) -> None:
    a, b = cluster.nodes
    async with connected(a, "new", speedups) as (peer, header, _):
        sid = session_id(header)
        await peer.send(request("idem-1", "slow", 1))
        await eventually(lambda: cluster.runs[1] == 1)
    # The client comes back on the other node and asks again: node A still runs it.
    async with connected(b, sid, speedups) as (peer, header, _):
        assert header == f"{sid}; resumed=1"
        await peer.send(request("idem-1", "slow", 1))
        await peer.send(request("idem-2", "count", 2))  # a new call runs at once, here
        assert await answer(peer) == {"jsonrpc": "2.0", "id": "idem-2", "result": 2}
        cluster.gate.set()  # A's handler ends; its answer reaches B through the broker
        assert await answer(peer) == {"jsonrpc": "2.0", "id": "idem-1", "result": 1}
        await peer.send(request("idem-1", "slow", 1))  # a later repeat: from B's record
        assert (await answer(peer))["result"] == 1
    assert cluster.runs == Counter({1: 1, 2: 1})


async def test_an_answer_the_client_missed_is_replayed_by_another_node_after_its_node_died(
    speedups: Any, cluster: Cluster2
) -> None:
    a, b = cluster.nodes
    async with connected(a, "new", speedups) as (peer, header, _):
        sid = session_id(header)
        await peer.send(request("idem-7", "slow", 7))
        await eventually(lambda: cluster.runs[7] == 1)
    cluster.gate.set()  # it ends while the client is away: A writes its answer behind
    record = cluster.hub.sessions
    await eventually(lambda: sid in record and record_key("idem-7") in record[sid][1])
    a.sessions.close()
    await a.cluster.close()  # node A is gone
    async with connected(b, sid, speedups) as (peer, header, _):
        assert header == f"{sid}; resumed=1"
        await peer.send(request("idem-7", "slow", 7))
        assert await answer(peer) == {"jsonrpc": "2.0", "id": "idem-7", "result": 7}
    assert cluster.runs == Counter({7: 1})  # answered from the broker, not run again


async def test_calls_running_on_a_node_that_dies_run_again_where_the_client_is(
    speedups: Any, cluster: Cluster2
) -> None:
    """The one case that cannot be exactly once: the node died with the handler's outcome."""
    a, b = cluster.nodes
    async with connected(a, "new", speedups) as (peer, header, _):
        sid = session_id(header)
        await peer.send(request("idem-3", "slow", 3))
        await eventually(lambda: cluster.runs[3] == 1)
    async with connected(b, sid, speedups) as (peer, header, _):
        await peer.send(request("idem-3", "slow", 3))  # B waits for A's answer ...
        session = b.sessions.get(sid)
        assert session is not None
        await eventually(lambda: "idem-3" in session.waiting)
        a.sessions.close()  # ... and A dies with the call: B finds out, and runs it itself
        await a.cluster.close()
        await eventually(lambda: cluster.runs[3] == 2, timeout=10)
        cluster.gate.set()
        assert await answer(peer) == {"jsonrpc": "2.0", "id": "idem-3", "result": 3}


async def test_a_session_the_broker_does_not_know_is_a_new_one_and_sessions_stay_per_node_alone(
    speedups: Any, cluster: Cluster2
) -> None:
    a, _ = cluster.nodes
    async with connected(a, "no-such-session", speedups) as (_, header, _serving):
        assert header is not None and header.endswith("resumed=0")
    # A service on a broker of its own (the default) records nothing: nobody else could resume.
    alone = RpcService("test", Work(cluster.runs, cluster.gate))
    assert alone.sessions.shared is None and isinstance(alone.sessions, SessionStore)
    await alone.cluster.close()


async def test_a_client_that_goes_back_and_forth_keeps_one_run_per_call(speedups: Any, cluster: Cluster2) -> None:
    sid = "new"
    for hop in range(6):
        node = cluster.nodes[hop % 2]
        async with connected(node, sid, speedups) as (peer, header, _):
            if hop:
                assert header == f"{sid}; resumed=1"
            sid = session_id(header)
            for n in range(hop * 10, hop * 10 + 10):
                await peer.send(request(f"idem-{n}", "count", n))
                if hop and n % 10 == 0:
                    # And a repeat of one the client made on an earlier hop (another node, maybe).
                    await peer.send(request(f"idem-{n - 10}", "count", n - 10))
            got = [await answer(peer) for _ in range(10 + (1 if hop else 0))]
            assert sorted(r["result"] for r in got) == sorted(
                list(range(hop * 10, hop * 10 + 10)) + ([hop * 10 - 10] if hop else [])
            )
    assert cluster.runs == Counter({n: 1 for n in range(60)})


async def test_a_stream_cannot_move_to_another_node_and_the_client_is_told(speedups: Any, cluster: Cluster2) -> None:
    a, b = cluster.nodes
    async with connected(a, "new", speedups) as (peer, header, _):
        sid = session_id(header)
        await peer.send(json.dumps({"jsonrpc": "2.0", "method": "ticks", "params": {"n": 100}, "id": "idem-5"}))
        assert (await answer(peer))["result"] == {"stream": "idem-5"}
    session = a.sessions.get(sid)
    assert session is not None and "idem-5" in session.streams
    async with connected(b, sid, speedups) as (peer, header, _):
        assert header == f"{sid}; resumed=1"
        assert not session.streams  # handed over: its generator ended on node A
        await peer.send(json.dumps({"jsonrpc": "2.0", "method": "ticks", "params": {"n": 100}, "id": "idem-5"}))
        # Not resumed: a client that had items fails the stream rather than read it again from the start.
        assert (await answer(peer))["result"] == {"stream": "idem-5"}


async def test_a_session_this_node_let_go_is_taken_up_again_from_the_broker(speedups: Any, cluster: Cluster2) -> None:
    a, _ = cluster.nodes
    async with connected(a, "new", speedups) as (peer, header, _):
        sid = session_id(header)
        await peer.send(request("idem-4", "count", 4))
        assert (await answer(peer))["result"] == 4
    record = cluster.hub.sessions
    await eventually(lambda: sid in record and record_key("idem-4") in record[sid][1])
    a.sessions._expire(sid)  # gone from this node's memory (evicted, say); the broker still has it
    async with connected(a, sid, speedups) as (peer, header, _):
        assert header == f"{sid}; resumed=1"
        await peer.send(request("idem-4", "count", 4))
        assert (await answer(peer))["result"] == 4
    assert cluster.runs == Counter({4: 1})
