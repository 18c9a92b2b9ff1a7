"""A busy connection keeps hearing its peer (issue "a busy connection goes deaf"), on both servers.

1000 handlers that sleep fill the running budget; the connection must still
answer pings, act on cancels, deliver answers to calls its handlers make back,
see a reset, and refuse (never hang) what passes its queue. Each wait below is
bounded; a deaf connection would hang until the bound and fail.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from typing import Any, Dict, List

import pytest
from websockets.asyncio.client import connect

from fastwsrpc import RpcChannel, RpcMethodsBase, WebSocketRpcClient

from .support import NativeServerThread, ServerThread, eventually, raw_connection, serve_methods

pytestmark = pytest.mark.e2e

BUSY = 1000  # the default max_pending_requests


class Busy(RpcMethodsBase):
    """Handlers that wait for a gate (set from any thread), counting how they end."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Dict[str, Any] = {"started": 0, "cancelled": 0, "gate": None, "loop": None}
        self.lock = threading.Lock()

    async def hold(self, i: int = 0) -> int:
        state = self.state
        if state["gate"] is None:
            state["gate"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
        with self.lock:
            state["started"] += 1
        try:
            await state["gate"].wait()
        except asyncio.CancelledError:
            with self.lock:
                state["cancelled"] += 1
            raise
        return i

    async def big(self, size: int = 100_000) -> str:
        return "x" * size

    async def ask_back(self, i: int) -> int:
        assert self.channel is not None
        return (await self.channel.other.double(i=i)).result  # type: ignore[no-any-return]

    def open_gate(self) -> None:
        loop, gate = self.state["loop"], self.state["gate"]
        if loop is not None and gate is not None:
            loop.call_soon_threadsafe(gate.set)


class Doubler(RpcMethodsBase):
    async def double(self, i: int) -> int:
        return 2 * i


class Tracked:
    """on_connect / on_disconnect callbacks counting the server's open channels."""

    def __init__(self) -> None:
        self.open: List[RpcChannel] = []

    async def connected(self, channel: RpcChannel) -> None:
        self.open.append(channel)

    async def disconnected(self, channel: RpcChannel) -> None:
        if channel in self.open:
            self.open.remove(channel)


def call(i: int, method: str = "hold", **params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {"i": i}, "id": i})


def cancel(i: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": i}})


async def test_a_busy_connection_answers_pings(server_kind: str) -> None:
    methods = Busy()
    with serve_methods(server_kind, methods) as srv:
        async with connect(srv.url(), ping_interval=None, max_size=None) as ws:
            for i in range(BUSY):
                await ws.send(call(i))
            await eventually(lambda: methods.state["started"] == BUSY, timeout=30)
            for _ in range(3):
                pong = await ws.ping()
                await asyncio.wait_for(pong, 5)
            methods.open_gate()
            answers = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(BUSY)]
            assert sorted(a["result"] for a in answers) == list(range(BUSY))


async def test_cancels_reach_a_busy_connection_running_and_queued(server_kind: str) -> None:
    methods = Busy()
    with serve_methods(server_kind, methods) as srv:
        async with connect(srv.url(), ping_interval=None) as ws:
            # 1000 running and 500 queued behind them; then every one cancelled.
            for i in range(BUSY + 500):
                await ws.send(call(i))
            await eventually(lambda: methods.state["started"] == BUSY, timeout=30)
            # The queued ones first (cancelling a running one frees a slot for the next in the queue).
            for i in [*range(BUSY, BUSY + 500), *range(BUSY)]:
                await ws.send(cancel(i))
            await eventually(lambda: methods.state["cancelled"] == BUSY, timeout=5)
            # The queued ones never started, and nobody is answered; the connection serves on.
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "big", "params": {"size": 3}, "id": "after"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {
                "jsonrpc": "2.0",
                "id": "after",
                "result": "xxx",
            }
            assert methods.state["started"] == BUSY


async def test_a_reset_releases_a_busy_connection(server_kind: str) -> None:
    methods = Busy()
    tracked = Tracked()
    with serve_methods(
        server_kind, methods, on_connect=[tracked.connected], on_disconnect=[tracked.disconnected]
    ) as srv:
        _reader, writer, _ = await raw_connection(srv.url())
        writer.write(b"".join(masked_text(call(i)) for i in range(BUSY)))
        await writer.drain()
        await eventually(lambda: methods.state["started"] == BUSY and len(tracked.open) == 1, timeout=30)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a TCP reset: the peer vanished
        await eventually(lambda: methods.state["cancelled"] == BUSY and not tracked.open, timeout=5)


async def test_handlers_calling_back_with_calls_queued_behind_them(server_kind: str) -> None:
    with serve_methods(server_kind, Busy()) as srv:
        async with WebSocketRpcClient(srv.url(), Doubler()) as client:
            assert client.channel is not None and client.channel._calls.window == BUSY  # advertised by the server
            results = await asyncio.wait_for(
                asyncio.gather(*(client.other.ask_back(i=i) for i in range(4 * BUSY))), 120
            )
            assert [r.result for r in results] == [2 * i for i in range(4 * BUSY)]


async def test_our_client_is_never_refused_when_pipelining(server_kind: str) -> None:
    methods = Busy()
    with serve_methods(server_kind, methods) as srv:
        async with WebSocketRpcClient(srv.url(), RpcMethodsBase()) as client:
            calls = asyncio.gather(*(client.other.hold(i=i) for i in range(5 * BUSY)))
            await eventually(lambda: methods.state["started"] == BUSY, timeout=30)
            methods.open_gate()
            results = await asyncio.wait_for(calls, 120)
            assert [r.result for r in results] == list(range(5 * BUSY))


async def test_a_raw_client_pipelining_20k_calls_gets_one_answer_each(server_kind: str) -> None:
    methods = Busy()
    total = 20_000
    with serve_methods(server_kind, methods) as srv:
        async with connect(srv.url(), ping_interval=None, max_size=None) as ws:

            async def send_all() -> None:
                for i in range(total):
                    await ws.send(call(i))

            sender = asyncio.ensure_future(send_all())
            answers: Dict[Any, Any] = {}
            await eventually(lambda: methods.state["started"] == BUSY, timeout=30)
            # The queue is full: the rest are refused as they come; drain them.
            while len(answers) < total - 2 * BUSY:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert answer["id"] not in answers, answer
                answers[answer["id"]] = answer
            await sender
            methods.open_gate()
            while len(answers) < total:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert answer["id"] not in answers, answer
                answers[answer["id"]] = answer
    refused = [a for a in answers.values() if "error" in a]
    assert sorted(answers) == list(range(total))
    assert len(refused) == total - 2 * BUSY
    for answer in refused:
        error = answer["error"]
        assert error["code"] == -32001
        assert error["data"]["limit"] == "max_queued_requests" and error["data"]["retry_after"] > 0
    assert all(a["result"] == a["id"] for a in answers.values() if "result" in a)


def masked_text(text: str) -> bytes:
    from fastwsrpc import _accel

    return bytes(_accel.impl.build_frame(1, text.encode(), True))


@pytest.mark.parametrize("kind", ["fastapi", "native"])
async def test_a_peer_that_never_reads_nor_pongs_is_dropped(kind: str) -> None:
    methods = Busy()
    tracked = Tracked()
    kwargs: Dict[str, Any] = {"on_connect": [tracked.connected], "on_disconnect": [tracked.disconnected]}
    kwargs["send_timeout"] = None  # only the keepalive may drop it here
    if kind == "fastapi":
        from fastapi import FastAPI

        from fastwsrpc import WebSocketRpcEndpoint

        app = FastAPI()
        WebSocketRpcEndpoint(methods, **kwargs).register_route(app, "/ws")
        server: Any = ServerThread(app, ws="websockets-sansio", ws_ping_interval=0.5, ws_ping_timeout=0.5)
    else:
        from fastwsrpc.server import WebSocketRpcServer

        server = NativeServerThread(WebSocketRpcServer(methods, ping_interval=0.5, ping_timeout=0.5, **kwargs))
    with server as srv:
        _reader, writer, _ = await raw_connection(srv.url())
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Answers of 100 kB each, never read: the server's write buffer fills.
        writer.write(b"".join(masked_text(call(i, "big", size=100_000)) for i in range(300)))
        await writer.drain()
        await eventually(lambda: len(tracked.open) == 1, timeout=10)
        # Neither read nor pong: the keepalive drops it and its channel is released.
        await eventually(lambda: not tracked.open, timeout=10)
        writer.transport.abort()


@pytest.mark.parametrize("kind", ["fastapi", "native"])
@pytest.mark.parametrize("failing", ["identify", "on_connect"])
async def test_a_failure_before_the_read_loop_releases_everything(kind: str, failing: str) -> None:
    from websockets.exceptions import ConnectionClosed

    from fastwsrpc import WebSocketRpcEndpoint
    from fastwsrpc.server import WebSocketRpcServer

    class Boom(Exception):
        pass

    def identify(_: Any) -> str:
        raise Boom("identify failed")

    async def on_connect(channel: RpcChannel) -> None:
        raise Boom("on_connect failed")

    tracked = Tracked()
    kwargs: Dict[str, Any] = {"on_disconnect": [tracked.disconnected]}
    if failing == "identify":
        kwargs["identify"] = identify
    else:
        kwargs["on_connect"] = [tracked.connected, on_connect]
    if kind == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        endpoint: Any = WebSocketRpcEndpoint(Busy(), **kwargs)
        endpoint.register_route(app, "/ws")
        server: Any = ServerThread(app)
        channels: Any = lambda: endpoint.manager.active_connections  # noqa: E731
    else:
        native = WebSocketRpcServer(Busy(), **kwargs)
        endpoint = native.endpoint
        server = NativeServerThread(native)
        channels = lambda: native.channels  # noqa: E731
    with server as srv:
        async with connect(srv.url(), ping_interval=None) as ws:
            if failing == "identify":
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            else:  # a failing connect callback is logged; the connection serves on
                await ws.send(call(1, "big", size=2))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == "xx"
        await eventually(lambda: not channels() and not endpoint.cluster._channels, timeout=10)
