"""What the CLI's stream, subscribe and ``serve --workers`` tests serve.

``python -m fastwsrpc serve tests.cli_app:NodeMethods --path '/ws/{client_id}' ...``:
its constructor takes ``cluster``, so ``serve`` hands it the node's cluster, and
``route`` reaches a client on any worker through it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Dict

from fastwsrpc import RemoteValueError, RpcMethodsBase, RpcUtilityMethods
from fastwsrpc.cluster import Cluster


class NodeMethods(RpcUtilityMethods):
    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster

    async def pid(self) -> int:
        """The process id of the worker that holds this connection."""
        return os.getpid()

    async def node(self) -> str:
        return self.cluster.node_id

    async def route(self, client_id: str, method: str, params: Any = None) -> Any:
        """Call ``method`` on the client ``client_id``, wherever it is connected."""
        return (await self.cluster.call(client_id, method, params, timeout=10)).result

    async def emit(self, topic: str, data: Any = None) -> None:
        """Publish ``data`` on ``topic`` to every subscriber, on every node."""
        await self.cluster.publish_topic(topic, data)

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def ticks(self, n: int, every: float = 0.0) -> AsyncIterator[Dict[str, int]]:
        """``{"i": 0}``, ``{"i": 1}``, ... ``n`` of them, ``every`` seconds apart."""
        for i in range(n):
            if every:
                await asyncio.sleep(every)  # the pace of the stream, not a wait for something
            yield {"i": i}

    async def broken_ticks(self, n: int) -> AsyncIterator[int]:
        """``n`` items, then a JSON-RPC error."""
        for i in range(n):
            yield i
        raise RemoteValueError("ran out of ticks", code=-32050, data={"after": n})

    async def looks_like_a_stream(self) -> Dict[str, int]:
        """A plain method whose result has the shape of a stream's answer (but not its id)."""
        return {"stream": 999_999}


class BrokenMethods(RpcMethodsBase):
    """Cannot be built: a worker serving it dies as it starts (its supervisor's restart bound is tested with it)."""

    def __init__(self) -> None:
        raise RuntimeError("this methods class cannot be built")


class ClientMethods(RpcMethodsBase):
    """What each test client exposes: its own name."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    async def whoami(self) -> str:
        return self.name
