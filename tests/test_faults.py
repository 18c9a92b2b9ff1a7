"""Faults: a killed server, a cut / stalled / trickling link, a flood. Loopback only, every loop bounded."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from typing import Any, Dict, List

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fastwsrpc import (
    RpcChannelClosedError,
    RpcKeepaliveConfig,
    RpcMethodsBase,
    RpcRetryConfig,
    WebSocketRpcClient,
    WebSocketRpcClientConfig,
)

from .support import ServerProcess, TcpProxy, eventually

FAST_RETRY = RpcRetryConfig(max_attempts=200, min_wait=0.02, max_wait=0.1)
#: Reconnect at once, and keep trying while a killed server restarts.
FAST_RECONNECT: Dict[str, Any] = {"reconnect_delay": 0.01, "max_reconnect_attempts": 200}


def leftover_tasks() -> List[Any]:
    """Tasks still running other than this test's and the test proxy's own."""
    return [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and not t.done()
        and "TcpProxy" not in getattr(t.get_coro(), "__qualname__", "")
    ]


async def test_server_killed_mid_call_then_back(server_kind: str) -> None:
    srv = ServerProcess(kind=server_kind).start()
    client = WebSocketRpcClient(
        srv.url(), RpcMethodsBase(), auto_reconnect=True, retry_config=FAST_RETRY, **FAST_RECONNECT
    )
    try:
        async with client:
            calls = [asyncio.ensure_future(client.other.sleep(seconds=60)) for _ in range(10)]
            await eventually(lambda: client.pending_count == 10)
            srv.kill()  # SIGKILL: no close frame, the kernel resets the socket
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
            assert all(isinstance(r, RpcChannelClosedError) for r in results)
            assert client.pending_count == 0
            srv.start()  # same port
            await client.wait_connected(timeout=20)
            assert (await client.other.add(a=40, b=2)).result == 42
        assert leftover_tasks() == []
    finally:
        srv.kill()


@pytest.fixture
async def proxy(server: Any) -> Any:
    p = await TcpProxy(server.port).start()
    yield p
    await p.close()


async def test_cut_link_fails_pending_calls_and_leaves_nothing(proxy: TcpProxy) -> None:
    client = WebSocketRpcClient(proxy.url(), RpcMethodsBase(), retry_config=False)
    async with client:
        calls = [asyncio.ensure_future(client.other.sleep(seconds=60)) for _ in range(5)]
        await eventually(lambda: client.pending_count == 5)
        proxy.cut()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        assert all(isinstance(r, RpcChannelClosedError) for r in results)
        assert client.pending_count == 0 and client.channel is not None and client.channel.running_count == 0
    assert leftover_tasks() == []


async def test_trickling_server_is_dropped_by_keepalive(proxy: TcpProxy) -> None:
    # Slowloris against the client: the answer arrives 16 bytes per 50 ms.
    config = WebSocketRpcClientConfig(
        keepalive=RpcKeepaliveConfig(interval=0.2, max_failures=2, use_protocol_ping=False)
    )
    client = WebSocketRpcClient(proxy.url(), RpcMethodsBase(), config=config, retry_config=False)
    async with client:
        proxy.mode = "trickle"
        with pytest.raises(RpcChannelClosedError, match="keepalive"):
            await asyncio.wait_for(client.other.big(size=200_000), 20)
        assert client.pending_count == 0
    assert leftover_tasks() == []


async def test_stalled_link_without_keepalive_is_bounded_by_the_call_timeout(proxy: TcpProxy) -> None:
    async with WebSocketRpcClient(proxy.url(), RpcMethodsBase(), default_response_timeout=0.3) as client:
        proxy.mode = "stall"
        with pytest.raises(asyncio.TimeoutError):
            await client.other.add(a=1, b=2)
        assert client.pending_count == 0
        proxy.mode = "pass"
        assert (await client.other.add(a=1, b=2)).result == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc")
async def test_flood_then_memory_returns_and_server_still_answers(server_kind: str) -> None:
    with ServerProcess(kind=server_kind) as srv:
        async with WebSocketRpcClient(srv.url(), RpcMethodsBase()) as client:
            for _ in range(3):  # warm up allocator pools and method tables
                await asyncio.gather(*(client.other.add(a=i, b=i) for i in range(1000)))
        baseline = srv.rss_bytes()

        # malformed frames: each answered, none kills the connection
        async with connect(srv.url()) as ws:
            for i in range(2000):
                await ws.send("{not json" if i % 2 else '{"jsonrpc":"2.0","method":7,"id":1}')
            for _ in range(2000):
                assert "error" in json.loads(await asyncio.wait_for(ws.recv(), 10))
        # oversized frames: each closes its own connection with 1009
        for _ in range(10):
            async with connect(srv.url("/small"), max_size=None) as ws:
                await ws.send("x" * 100_000)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
        # 10,000 calls pending at once on one connection
        async with WebSocketRpcClient(srv.url("/many"), RpcMethodsBase(), max_pending_requests=20_000) as client:
            calls = [client.other.sleep(seconds=1.0) for _ in range(10_000)]
            results = await asyncio.wait_for(asyncio.gather(*calls), 120)
            assert len(results) == 10_000 and client.pending_count == 0

        gc.collect()
        await asyncio.sleep(0.5)
        grown = srv.rss_bytes() - baseline
        async with WebSocketRpcClient(srv.url(), RpcMethodsBase()) as client:
            assert (await client.other.add(a=1, b=1)).result == 2
        # generous: allocators keep some pages, but 10k calls' worth must not stay
        assert grown < 60 * 1024 * 1024, f"server RSS grew by {grown / 1e6:.1f} MB"
        print(f"\nserver RSS: baseline {baseline / 1e6:.1f} MB, after the flood +{grown / 1e6:.1f} MB")
