"""A native cluster node for the rolling-restart test: ``python -m tests.rolling_app PORT BROKER_URL NAMESPACE``.

Topic history on (so subscribers recover across nodes from the broker); SIGTERM drains over one second.
"""

from __future__ import annotations

import sys

import fastwsrpc
from fastwsrpc import RpcMethodsBase
from fastwsrpc.cluster import broker_from_url


class Node(RpcMethodsBase):
    async def echo(self, n: int) -> int:
        return n


if __name__ == "__main__":
    port, url, namespace = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    fastwsrpc.run(
        Node(), port=port, broker=broker_from_url(url, namespace=namespace), topic_history=100_000, drain_timeout=1.0
    )
