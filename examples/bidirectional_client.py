"""A client that exposes methods the server calls, and calls the server.

Run (with examples/bidirectional_server.py up): python examples/bidirectional_client.py
"""

import asyncio
import sys
from typing import List

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient


class ClientSide(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.got_tags = asyncio.Event()

    async def whoami(self) -> str:
        return "the demo client"

    async def add_tags(self, tags: List[str]) -> str:
        self.got_tags.set()
        return "#" + " #".join(tags)

    async def event(self, text: str) -> None:
        print(f"[client] server sent event: {text}", flush=True)


async def main(uri: str) -> None:
    async with WebSocketRpcClient(uri, ClientSide()) as client:
        print(f"[client] add(a=1, b=2) -> {(await client.other.add(a=1, b=2)).result}")
        print(f"[client] sum_all(1, 2, 3, 4) -> {(await client.other.sum_all(1, 2, 3, 4)).result}")
        print(f"[client] ask_client_name() -> {(await client.other.ask_client_name()).result}")
        batch = await client.call_batch([("add", {"a": 2, "b": 3}), ("sum_all", [10, 20])])
        print(f"[client] batch of two -> {[r.result for r in batch]}")
        await asyncio.wait_for(client.channel.methods.got_tags.wait(), 10)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9000/ws"))
