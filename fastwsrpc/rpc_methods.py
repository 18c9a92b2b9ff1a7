"""``fastapi_ws_rpc.rpc_methods``, under fastwsrpc: what one side exposes to the other.

A thin alias, so that imports written against fastapi-ws-rpc 1.x migrate by
changing the package name alone; the objects are fastwsrpc's own.
"""

from __future__ import annotations

from . import NoResponse, ProcessDetails, RpcMethodsBase, RpcUtilityMethods
from .methods import PING_RESPONSE

#: Built-in methods every ``RpcMethodsBase`` exposes, as in fastapi-ws-rpc 1.2
#: (``_get_channel_id_`` is the one underscore name answered: the channel's id).
EXPOSED_BUILT_IN_METHODS = ["ping", "_get_channel_id_"]

__all__ = [
    "EXPOSED_BUILT_IN_METHODS",
    "PING_RESPONSE",
    "NoResponse",
    "ProcessDetails",
    "RpcMethodsBase",
    "RpcUtilityMethods",
]
