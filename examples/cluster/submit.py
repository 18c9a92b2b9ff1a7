"""Submits jobs to one server; they run on workers connected to any server.

python examples/cluster/submit.py ws://127.0.0.1:8002/ws/submitter 8
"""

from __future__ import annotations

import asyncio
import sys

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient


async def main(url: str, jobs: int) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        results = await asyncio.gather(*(client.other.submit(job={"n": i}) for i in range(jobs)))
        for i, response in enumerate(results):
            r = response.result
            print(f"job {i}: {r['result']} by {r['worker']} (dispatched by node {r['dispatched_by'][:8]})")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8))
