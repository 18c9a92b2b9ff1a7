"""A native cluster node for the two-node chaos test: ``python -m tests.chaos_node PORT BROKER_URL NAMESPACE LOG``.

``count(n)`` appends ``n`` to the file ``LOG`` before it answers (one ``write``
with ``O_APPEND``: it survives a SIGKILL), so the test counts every execution,
on every node and incarnation. Topic history on: subscribers recover from the broker.
"""

from __future__ import annotations

import asyncio
import os
import sys

import fastwsrpc
from fastwsrpc import RpcMethodsBase
from fastwsrpc.cluster import broker_from_url


class Counted(RpcMethodsBase):
    def __init__(self, log: str) -> None:
        super().__init__()
        self.fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def count(self, n: int) -> int:
        os.write(self.fd, b"%d\n" % n)
        await asyncio.sleep(0)  # a real await: the answer may be lost in flight
        return n


if __name__ == "__main__":
    port, url, namespace, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    fastwsrpc.run(Counted(log), port=port, broker=broker_from_url(url, namespace=namespace), topic_history=100_000)
