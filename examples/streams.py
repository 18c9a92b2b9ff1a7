"""Streams and topics, end to end in one process: ``python examples/streams.py``.

The server exposes ``ticks`` (an async generator: a stream) and publishes prices
on a topic; the client consumes the stream with flow control, then subscribes.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import asyncio
import socket
from typing import AsyncIterator, Dict

import uvicorn
from fastapi import FastAPI

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient, WebSocketRpcEndpoint


class Feed(RpcMethodsBase):
    async def ticks(self, n: int, every: float = 0.0) -> AsyncIterator[Dict[str, int]]:
        """``n`` ticks; the generator is never more than the client's buffer ahead of it."""
        for i in range(n):
            if every:
                await asyncio.sleep(every)
            yield {"i": i}


async def main() -> None:
    app = FastAPI()
    endpoint = WebSocketRpcEndpoint(Feed())
    endpoint.register_route(app, "/ws")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)

    async with WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws") as client:
        # A stream: iterate; breaking out stops the server's generator at once.
        async for tick in client.other.ticks.stream(n=5):
            print("tick", tick)
        async with client.stream("ticks", {"n": 1000}, buffer=64) as ticks:
            first = [await ticks.next() for _ in range(3)]
            print("first three of a long stream:", first)

        # A topic: subscribe, then the server publishes.
        events = client.subscribe("prices.btc")
        await events.open()
        for price in (97_000, 97_010, 96_990):
            await endpoint.publish("prices.btc", {"usd": price})
        for _ in range(3):
            event = await events.next()
            print(event.topic, event.data, "dropped so far:", event.dropped)
        await events.aclose()

    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
