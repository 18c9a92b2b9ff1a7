"""``fastapi_ws_rpc.rpc_methods``, under fastwsrpc: what one side exposes to the other.

A thin alias, so that imports written against fastapi-ws-rpc 1.x migrate by
changing the package name alone; the objects are fastwsrpc's own.
"""

from __future__ import annotations

from . import NoResponse, ProcessDetails, RpcMethodsBase, RpcUtilityMethods
from .methods import PING_RESPONSE

#: Built-in methods every ``RpcMethodsBase`` exposes. fastapi-ws-rpc 1.2 also
#: lists ``_get_channel_id_``; fastwsrpc exposes no underscore name to the peer.
EXPOSED_BUILT_IN_METHODS = ["ping"]

__all__ = [
    "EXPOSED_BUILT_IN_METHODS",
    "PING_RESPONSE",
    "NoResponse",
    "ProcessDetails",
    "RpcMethodsBase",
    "RpcUtilityMethods",
]
