"""``fastapi_ws_rpc.websocket_rpc_client``, under fastwsrpc: the client.

A thin alias, so that ``from fastapi_ws_rpc.websocket_rpc_client import
WebSocketRpcClient`` migrates by changing the package name alone. Everything
here is fastwsrpc's own object (``WebSocketRpcClient is
fastwsrpc.WebSocketRpcClient``); the close codes are RFC 6455's numbers, named
as fastapi-ws-rpc 1.2 names them.
"""

from __future__ import annotations

from . import OnConnectCallback, OnDisconnectCallback, OnErrorCallback, WebSocketRpcClient
from .config import DEFAULT_RECEIVE_TIMEOUT

#: Seconds allowed to receive one whole message (fastapi-ws-rpc's slowloris guard).
MESSAGE_RECEIVE_TIMEOUT = DEFAULT_RECEIVE_TIMEOUT

# WebSocket close codes (RFC 6455, section 7.4.1).
WS_CLOSE_CODE_NORMAL = 1000
WS_CLOSE_CODE_GOING_AWAY = 1001
WS_CLOSE_CODE_PROTOCOL_ERROR = 1002
WS_CLOSE_CODE_UNSUPPORTED_DATA = 1003
WS_CLOSE_CODE_ABNORMAL_CLOSURE = 1006
WS_CLOSE_CODE_INVALID_DATA = 1007
WS_CLOSE_CODE_POLICY_VIOLATION = 1008
WS_CLOSE_CODE_INTERNAL_ERROR = 1011
WS_CLOSE_CODE_SERVICE_RESTART = 1012

__all__ = [
    "MESSAGE_RECEIVE_TIMEOUT",
    "WS_CLOSE_CODE_ABNORMAL_CLOSURE",
    "WS_CLOSE_CODE_GOING_AWAY",
    "WS_CLOSE_CODE_INTERNAL_ERROR",
    "WS_CLOSE_CODE_INVALID_DATA",
    "WS_CLOSE_CODE_NORMAL",
    "WS_CLOSE_CODE_POLICY_VIOLATION",
    "WS_CLOSE_CODE_PROTOCOL_ERROR",
    "WS_CLOSE_CODE_SERVICE_RESTART",
    "WS_CLOSE_CODE_UNSUPPORTED_DATA",
    "OnConnectCallback",
    "OnDisconnectCallback",
    "OnErrorCallback",
    "WebSocketRpcClient",
]
