"""Deploys without drops: drain on both servers (refuse new connections, finish calls, close with 1012)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Tuple

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fastwsrpc import WebSocketRpcEndpoint
from fastwsrpc.server import WebSocketRpcServer

from .support import NativeServerThread, ServerThread, eventually
from .test_busy_connection import Busy, call

pytestmark = pytest.mark.e2e


def build(kind: str, methods: Busy) -> Tuple[Any, Any]:
    """The server (not started) and what has ``drain``: the endpoint, or the native server."""
    if kind == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        endpoint = WebSocketRpcEndpoint(methods)
        endpoint.register_route(app, "/ws")
        return ServerThread(app), endpoint
    native = WebSocketRpcServer(methods)
    return NativeServerThread(native), native


@pytest.mark.parametrize("kind", ["fastapi", "native"])
async def test_drain_finishes_calls_then_closes_with_1012_and_refuses_newcomers(kind: str) -> None:
    methods = Busy()
    server, drainable = build(kind, methods)
    with server as srv:
        async with connect(srv.url()) as busy, connect(srv.url()) as idle:
            await busy.send(call(1))
            await eventually(lambda: methods.state["started"] == 1, timeout=10)
            assert srv.loop is not None
            draining = asyncio.run_coroutine_threadsafe(drainable.drain(3.0), srv.loop)
            await eventually(lambda: drainable.draining, timeout=10)
            with pytest.raises(InvalidStatus) as refused:
                async with connect(srv.url()):
                    pass
            assert refused.value.response.status_code == 503
            # The idle one is closed with 1012 in its turn; the busy one only after its call is answered.
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(idle.recv(), 20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            methods.open_gate()
            assert json.loads(await asyncio.wait_for(busy.recv(), 20))["result"] == 1
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(busy.recv(), 20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            await asyncio.wrap_future(draining)


async def test_the_native_health_route_says_503_while_draining() -> None:
    methods = Busy()
    server, drainable = build("native", methods)

    async def health(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        return head.split(b"\r\n", 1)[0]

    with server as srv:
        assert await health(srv.port) == b"HTTP/1.1 200 OK"
        assert srv.loop is not None
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drainable.drain(0.5), srv.loop))
        assert await health(srv.port) == b"HTTP/1.1 503 Service Unavailable"
