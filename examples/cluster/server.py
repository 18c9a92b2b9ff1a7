"""A job dispatcher that scales out: run two (or more) of these on one Redis.

    uvicorn examples.cluster.server:app --port 8001   # FASTWSRPC_BROKER=redis://127.0.0.1:6379/0
    uvicorn examples.cluster.server:app --port 8002

Workers connect to any server as ``/ws/worker-N`` and join the group ``workers``;
submitters connect to any server and call ``submit``. The server that gets a job
calls ``work`` on a free worker wherever it is connected: on this process, or on
another one through Redis. A worker busy with a job answers -32010, and the
dispatcher tries the next.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any, Dict

from fastapi import FastAPI

from fastwsrpc import RemoteValueError, RpcMethodsBase, WebSocketRpcEndpoint
from fastwsrpc.cluster import Cluster, broker_from_url
from fastwsrpc.errors import RpcChannelClosedError, RpcClientNotFoundError

BUSY = -32010
cluster = Cluster(broker_from_url(os.environ.get("FASTWSRPC_BROKER", "redis://127.0.0.1:6379/0")))


class Dispatcher(RpcMethodsBase):
    async def register_worker(self) -> str:
        """A worker announces itself: it joins the group the dispatcher picks from."""
        assert self.channel is not None
        await cluster.join(self.channel.context["client_id"], "workers")
        return cluster.node_id

    async def submit(self, job: Any) -> Dict[str, Any]:
        """Run ``job`` on the first free worker, wherever it is connected (waits up to 10 s for one)."""
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            workers = await cluster.clients("workers")
            random.shuffle(workers)
            for worker in workers:
                try:
                    response = await cluster.call(worker, "work", {"job": job}, timeout=30)
                except RemoteValueError as exc:
                    if exc.code == BUSY:
                        continue
                    raise
                except (RpcClientNotFoundError, RpcChannelClosedError):
                    continue  # it left a moment ago
                return {"worker": worker, "result": response.result, "dispatched_by": cluster.node_id}
            await asyncio.sleep(0.02)  # every worker is busy: try again shortly
        raise RemoteValueError("no free worker", code=-32011)


# Each connection joins the cluster under the {client_id} of its URL.
endpoint = WebSocketRpcEndpoint(Dispatcher(), cluster=cluster)
app = FastAPI()
endpoint.register_route(app, "/ws/{client_id}")
