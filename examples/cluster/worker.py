"""A worker: connects to one server of the cluster and runs jobs, one at a time.

python examples/cluster/worker.py ws://127.0.0.1:8001/ws/worker-1
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from typing import Any

from fastwsrpc import RemoteValueError, RpcMethodsBase, WebSocketRpcClient

BUSY = -32010


class Worker(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.busy = False

    async def work(self, job: Any) -> str:
        """The job: a slow-ish hash. Busy workers say so, and the dispatcher moves on."""
        if self.busy:
            raise RemoteValueError("busy", code=BUSY)
        self.busy = True
        try:
            await asyncio.sleep(0.05)
            return hashlib.sha256(repr(job).encode()).hexdigest()[:12]
        finally:
            self.busy = False


async def main(url: str, seconds: float) -> None:
    async with WebSocketRpcClient(url, Worker(), auto_reconnect=True) as client:
        node = (await client.other.register_worker()).result
        print(f"{url}: registered on node {node[:8]}", flush=True)
        await asyncio.sleep(seconds)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 3600))
