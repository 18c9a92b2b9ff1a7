"""One cluster node in a process of its own, for the cross-process cluster tests.

    python -m tests.cluster_app --port N --broker URL [--namespace NS] [--ttl S] [--heartbeat S]
                                [--history N] [--history-ttl S]

Serves ``/ws/{client_id}``. Until the endpoint attaches connections to its cluster
itself, this app does it with the endpoint's connect and disconnect callbacks (the
client id is in ``channel.context``), which is all the cluster needs.

The methods let a test drive the node's cluster from a client: a failure comes
back as ``{"error": <exception class name>, "message": ...}`` rather than as a
JSON-RPC internal error, so that a test can assert the exact exception.

``--history N`` keeps the last N publications of every topic in the broker (the
endpoint's ``topic_history``); ``publish`` publishes from this node.
"""

from __future__ import annotations

import argparse
import inspect
import resource
from typing import Any, Dict, List, Optional

import uvicorn
from fastapi import FastAPI

from fastwsrpc import RpcMethodsBase, WebSocketRpcEndpoint
from fastwsrpc.cluster import Cluster, broker_from_url
from fastwsrpc.errors import RpcError
from fastwsrpc.topics import TopicHub


def make_app(
    broker_url: str,
    ttl: float,
    heartbeat: float,
    namespace: str = "fastwsrpc",
    history: int = 0,
    history_ttl: Optional[float] = None,
) -> FastAPI:
    broker = broker_from_url(broker_url, namespace=namespace)
    cluster = Cluster(broker, presence_ttl=ttl, heartbeat_interval=heartbeat)
    hub: Dict[str, TopicHub] = {}

    async def guarded(coro: Any) -> Dict[str, Any]:
        try:
            return {"result": await coro}
        except RpcError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    async def result_of(coro: Any) -> Any:
        return (await coro).result

    class NodeMethods(RpcMethodsBase):
        async def node(self) -> str:
            return cluster.node_id

        async def route(
            self, client_id: str, method: str, params: Any = None, timeout: Optional[float] = None
        ) -> Dict[str, Any]:
            return await guarded(result_of(cluster.call(client_id, method, params, timeout=timeout)))

        async def notify_client(self, client_id: str, method: str, params: Any = None) -> Dict[str, Any]:
            return await guarded(cluster.notify(client_id, method, params))

        async def broadcast(self, method: str, params: Any = None, group: Optional[str] = None) -> Dict[str, Any]:
            return await guarded(cluster.broadcast(method, params, group=group))

        async def join(self, client_id: str, group: str) -> Dict[str, Any]:
            return await guarded(cluster.join(client_id, group))

        async def leave(self, client_id: str, group: str) -> Dict[str, Any]:
            return await guarded(cluster.leave(client_id, group))

        async def clients(self, group: Optional[str] = None) -> Dict[str, Any]:
            return await guarded(cluster.clients(group))

        async def local_clients(self) -> List[str]:
            return cluster.local_clients()

        async def publish(self, topic: str, count: int = 1, first: int = 0) -> List[Any]:
            """Publish ``first``, ``first + 1``, ... (``count`` of them) on ``topic``; their positions."""
            return [await hub["topics"].publish(topic, first + n) for n in range(count)]

    # The endpoint attaches each connection to the cluster under its {client_id}.
    options: Dict[str, Any] = {}
    wired = "topic_history" in inspect.signature(WebSocketRpcEndpoint).parameters
    if history and wired:
        options = {"topic_history": history, "topic_history_ttl": history_ttl}
    endpoint = WebSocketRpcEndpoint(NodeMethods(), cluster=cluster, **options)
    if history and not wired:  # what topic_history does, until the endpoint takes it
        topics = TopicHub(history=history, history_ttl=history_ttl)
        topics.attach(cluster)
        endpoint.service.topics = endpoint.topics = topics
    hub["topics"] = endpoint.topics
    app = FastAPI()
    endpoint.register_route(app, "/ws/{client_id}")

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--namespace", default="fastwsrpc")
    parser.add_argument("--ttl", type=float, default=15.0)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--history-ttl", type=float, default=None)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    uvicorn.run(
        make_app(args.broker, args.ttl, args.heartbeat, args.namespace, args.history, args.history_ttl),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="off",
        backlog=4096,
    )
