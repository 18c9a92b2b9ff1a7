"""``fastapi_ws_rpc.websocket_rpc_endpoint``, under fastwsrpc: the server endpoint.

A thin alias, so that imports written against fastapi-ws-rpc 1.x migrate by
changing the package name alone; the objects are fastwsrpc's own.
"""

from __future__ import annotations

from . import ConnectionManager, OnConnectCallback, OnDisconnectCallback, WebSocketFrameType, WebSocketRpcEndpoint

__all__ = [
    "ConnectionManager",
    "OnConnectCallback",
    "OnDisconnectCallback",
    "WebSocketFrameType",
    "WebSocketRpcEndpoint",
]
