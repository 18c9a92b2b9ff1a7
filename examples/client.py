"""Calls the example server's ``concat`` (start examples/server.py first)."""

import asyncio
import sys

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient


async def run_client(uri: str) -> None:
    async with WebSocketRpcClient(uri, RpcMethodsBase()) as client:
        response = await client.other.concat(a="hello", b=" world")
        print(response.result)  # hello world


if __name__ == "__main__":
    asyncio.run(run_client(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9000/ws"))
