"""A stream and a topic consumed over a real socket: our client, and a plain ``websockets`` client."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Dict

import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient, WebSocketRpcEndpoint

from .support import ServerThread

pytestmark = pytest.mark.e2e


class Feed(RpcMethodsBase):
    async def ticks(self, n: int) -> AsyncIterator[Dict[str, int]]:
        for i in range(n):
            yield {"i": i}


def feed_app() -> Any:
    app = FastAPI()
    endpoint = WebSocketRpcEndpoint(Feed())
    endpoint.register_route(app, "/ws")
    app.state.endpoint = endpoint
    return app


async def test_a_plain_websockets_client_consumes_a_stream_with_hand_written_frames() -> None:
    with ServerThread(feed_app()) as srv:
        async with connect(srv.url("/ws")) as ws:
            await ws.send('{"jsonrpc":"2.0","method":"ticks","params":{"n":3},"id":"s1"}')
            await ws.send('{"jsonrpc":"2.0","method":"$/stream.credit","params":{"stream":"s1","window":10}}')
            frames = [json.loads(await ws.recv()) for _ in range(5)]
        assert frames[0] == {"jsonrpc": "2.0", "id": "s1", "result": {"stream": "s1"}}
        assert [f["params"]["item"] for f in frames[1:4]] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert frames[4] == {"jsonrpc": "2.0", "method": "$/stream.end", "params": {"stream": "s1"}}


async def test_our_client_streams_and_subscribes_over_a_socket() -> None:
    app = feed_app()
    with ServerThread(app) as srv:
        async with WebSocketRpcClient(srv.url("/ws")) as client:
            assert [x["i"] async for x in client.other.ticks.stream(n=500)] == list(range(500))
            events = client.subscribe("news")
            await events.open()
            endpoint = app.state.endpoint
            assert srv.loop is not None
            import asyncio

            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(endpoint.publish("news", {"n": 1}), srv.loop))
            event = await asyncio.wait_for(events.next(), 30)
            assert (event.topic, event.data, event.dropped) == ("news", {"n": 1}, 0)
            await events.aclose()
