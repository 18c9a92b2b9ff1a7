"""``fastapi_ws_rpc.exceptions``, under fastwsrpc: every exception class.

A thin alias of :mod:`fastwsrpc.errors`, so that ``except`` clauses and imports
written against fastapi-ws-rpc 1.x migrate by changing the package name alone.
It holds the 1.2 names and fastwsrpc's additions (the remote error classes per
JSON-RPC code, the connection errors), all the very classes fastwsrpc raises.
"""

from __future__ import annotations

from .errors import (
    JsonRpcErrorCode,
    RemoteValueError,
    RpcBackpressureError,
    RpcChannelClosedError,
    RpcConnectionError,
    RpcError,
    RpcHandshakeRejectedError,
    RpcInternalError,
    RpcInvalidParamsError,
    RpcInvalidRequestError,
    RpcInvalidStateError,
    RpcMessageTooLargeError,
    RpcNotConnectedError,
    RpcParseError,
    RpcServerOverloadedError,
    RpcTimeoutError,
    RpcUsageError,
    UnknownMethodError,
)

__all__ = [
    "JsonRpcErrorCode",
    "RemoteValueError",
    "RpcBackpressureError",
    "RpcChannelClosedError",
    "RpcConnectionError",
    "RpcError",
    "RpcHandshakeRejectedError",
    "RpcInternalError",
    "RpcInvalidParamsError",
    "RpcInvalidRequestError",
    "RpcInvalidStateError",
    "RpcMessageTooLargeError",
    "RpcNotConnectedError",
    "RpcParseError",
    "RpcServerOverloadedError",
    "RpcTimeoutError",
    "RpcUsageError",
    "UnknownMethodError",
]
