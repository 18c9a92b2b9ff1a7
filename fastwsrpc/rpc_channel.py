"""``fastapi_ws_rpc.rpc_channel``, under fastwsrpc: the channel and its callback types.

A thin alias, so that imports written against fastapi-ws-rpc 1.x migrate by
changing the package name alone; the objects are fastwsrpc's own.
"""

from __future__ import annotations

from . import OnConnectCallback, OnDisconnectCallback, OnErrorCallback, RpcCaller, RpcChannel, RpcPromise

__all__ = [
    "OnConnectCallback",
    "OnDisconnectCallback",
    "OnErrorCallback",
    "RpcCaller",
    "RpcChannel",
    "RpcPromise",
]
