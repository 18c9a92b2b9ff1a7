"""Durable streams: a stream opened with a session outlives its connection, nothing lost or repeated.

The server side step by step on a memory pair (both twins), with the client
played by hand; then end to end, our client through a proxy that keeps
cutting the link, on both servers.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any, AsyncIterator, Dict, List

import pytest

from fastwsrpc import RpcChannelClosedError, RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient
from fastwsrpc.service import RpcService

from .support import NativeServerThread, ServerThread, TcpProxy, eventually, serve_methods
from .test_sessions_cluster import answer, connected, session_id


class Ticks(RpcMethodsBase):
    """``ticks(n)`` yields 0..n-1; ``starts`` counts how many times a generator started."""

    def __init__(self, starts: Counter[str]) -> None:
        super().__init__()
        self.starts = starts

    async def ticks(self, n: int) -> AsyncIterator[int]:
        self.starts["ticks"] += 1
        for i in range(n):
            yield i
            await asyncio.sleep(0)


def frame(method: str, params: Any, call_id: Any = None) -> str:
    message: Dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if call_id is not None:
        message["id"] = call_id
    return json.dumps(message)


async def test_a_durable_stream_resumes_after_the_items_the_consumer_gave_credits_for(speedups: Any) -> None:
    starts: Counter[str] = Counter()
    service = RpcService("test", Ticks(starts))
    try:
        async with connected(service, "new", speedups) as (peer, header, _):
            sid = session_id(header)
            await peer.send(frame("ticks", {"n": 20}, "idem-1"))
            await peer.send(frame("$/stream.credit", {"stream": "idem-1", "window": 8}))
            assert await answer(peer) == {"jsonrpc": "2.0", "id": "idem-1", "result": {"stream": "idem-1"}}
            got = [await answer(peer) for _ in range(8)]  # the window: 8 items, then the producer waits
            assert [m["params"]["item"] for m in got] == list(range(8))
            await peer.send(frame("$/stream.credit", {"stream": "idem-1", "credits": 3}))  # consumed 0, 1, 2
            got = [await answer(peer) for _ in range(3)]
            assert [m["params"]["item"] for m in got] == [8, 9, 10]
        # The connection is gone; the generator is not. Ask for the stream again.
        async with connected(service, sid, speedups) as (peer, header, _):
            assert header == f"{sid}; resumed=1"
            await peer.send(frame("ticks", {"n": 20}, "idem-1"))
            await peer.send(frame("$/stream.credit", {"stream": "idem-1", "window": 40}))
            resumed = await answer(peer)
            assert resumed["result"] == {"stream": "idem-1", "resumed": True, "from": 4}
            items = []
            for _ in range(100):  # bounded: 16 replayed and new items, then the end
                message = await answer(peer)
                if message["method"] == "$/stream.end":
                    break
                items.append(message["params"]["item"])
            assert items == list(range(3, 20))  # from the first item not credited back, in order
        assert starts["ticks"] == 1
    finally:
        service.sessions.close()
        await service.cluster.close()


async def test_a_stream_cancelled_by_its_consumer_is_not_kept(speedups: Any) -> None:
    starts: Counter[str] = Counter()
    service = RpcService("test", Ticks(starts))
    try:
        async with connected(service, "new", speedups) as (peer, header, _):
            sid = session_id(header)
            await peer.send(frame("ticks", {"n": 1000}, "idem-1"))
            assert (await answer(peer))["result"] == {"stream": "idem-1"}
            await peer.send(frame("$/stream.cancel", {"stream": "idem-1"}))
            session = service.sessions.get(sid)
            assert session is not None
            await eventually(lambda: "idem-1" not in session.streams and not session.running)
    finally:
        service.sessions.close()
        await service.cluster.close()


async def test_our_client_reads_a_stream_whole_over_a_link_that_keeps_dropping(server_kind: str) -> None:
    starts: Counter[str] = Counter()
    total = 3000
    rng = random.Random(6)
    with serve_methods(server_kind, Ticks(starts)) as srv:
        proxy = await TcpProxy(srv.port).start()
        retry = RpcRetryConfig(max_attempts=100, min_wait=0.01, max_wait=0.05)
        client = WebSocketRpcClient(
            proxy.url(), RpcMethodsBase(), auto_reconnect=True, reconnect_delay=0.01, retry_config=retry,
            max_reconnect_attempts=100,
        )  # fmt: skip
        try:
            async with client:
                items: List[int] = []
                stream = client.stream("ticks", {"n": total}, buffer=32)
                async with stream:
                    cut_at = sorted(rng.sample(range(1, total), 8))
                    async for item in stream:
                        items.append(item)
                        if cut_at and len(items) == cut_at[0]:
                            cut_at.pop(0)
                            proxy.cut()
                assert items == list(range(total))
                assert stream.resumes >= 8 and starts["ticks"] == 1
        finally:
            await proxy.close()


def serve_with_sessions(kind: str, methods: Any) -> Any:
    """A server of ``kind`` and its session store."""
    if kind == "fastapi":
        from fastapi import FastAPI

        from fastwsrpc import WebSocketRpcEndpoint

        app = FastAPI()
        endpoint = WebSocketRpcEndpoint(methods)
        endpoint.register_route(app, "/ws")
        return ServerThread(app), endpoint.service.sessions
    from fastwsrpc.server import WebSocketRpcServer

    server = WebSocketRpcServer(methods)
    return NativeServerThread(server), server.endpoint.sessions


async def test_a_stream_the_server_no_longer_has_fails_instead_of_skipping(server_kind: str) -> None:
    starts: Counter[str] = Counter()
    srv, sessions = serve_with_sessions(server_kind, Ticks(starts))
    with srv:
        proxy = await TcpProxy(srv.port).start()
        client = WebSocketRpcClient(proxy.url(), RpcMethodsBase(), auto_reconnect=True, reconnect_delay=0.01)
        try:
            async with client:
                stream = client.stream("ticks", {"n": 100_000}, buffer=8)
                async with stream:
                    assert await stream.next() == 0
                    proxy.mode = "stall"  # the client cannot come back until the session is gone
                    proxy.cut()
                    await eventually(lambda: all(s.deliver is None for s in sessions._sessions.values()))
                    assert srv.loop is not None
                    asyncio.run_coroutine_threadsafe(_call(sessions.close), srv.loop).result(10)
                    proxy.mode = "pass"
                    with pytest.raises(RpcChannelClosedError, match="could not resume"):
                        for _ in range(100_000):  # bounded: it fails once the queued items are read
                            await stream.next()
        finally:
            await proxy.close()


async def _call(func: Any) -> None:
    func()


async def test_a_durable_stream_keeps_at_most_max_replay_items_whatever_window_the_peer_grants(
    speedups: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastwsrpc import streams

    monkeypatch.setattr(streams, "MAX_REPLAY", 40)
    starts: Counter[str] = Counter()
    service = RpcService("test", Ticks(starts))
    try:
        async with connected(service, "new", speedups) as (peer, header, _):
            sid = session_id(header)
            await peer.send(frame("ticks", {"n": 100_000}, "idem-1"))
            await peer.send(frame("$/stream.credit", {"stream": "idem-1", "window": 10**9}))
            assert (await answer(peer))["result"] == {"stream": "idem-1"}
        # The peer is gone without giving credits back: the generator stops at the bound, and waits.
        session = service.sessions.get(sid)
        assert session is not None
        producer = session.streams["idem-1"]
        assert producer.durable is not None
        await eventually(lambda: producer.waiter is not None)
        assert len(producer.durable.replay) == 40
        # The client comes back: what was kept, then more as it gives credits back.
        async with connected(service, sid, speedups) as (peer, header, _):
            await peer.send(frame("ticks", {"n": 100_000}, "idem-1"))
            await peer.send(frame("$/stream.credit", {"stream": "idem-1", "window": 10**9}))
            assert (await answer(peer))["result"] == {"stream": "idem-1", "resumed": True, "from": 1}
            got = [(await answer(peer))["params"]["item"] for _ in range(40)]
            assert got == list(range(40))
            await peer.send(frame("$/stream.credit", {"stream": "idem-1", "credits": 40}))
            assert (await answer(peer))["params"]["item"] == 40
            await peer.send(frame("$/stream.cancel", {"stream": "idem-1"}))
    finally:
        service.sessions.close()
        await service.cluster.close()
