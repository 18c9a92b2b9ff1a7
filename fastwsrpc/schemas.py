"""``fastapi_ws_rpc.schemas``, under fastwsrpc: the JSON-RPC message types and codes.

A thin alias, so that imports written against fastapi-ws-rpc 1.x migrate by
changing the package name alone. ``JsonRpcErrorCode`` and ``WebSocketFrameType``
are the same enums (same members and values).

``JsonRpcRequest``, ``JsonRpcResponse`` and ``JsonRpcError`` name fastwsrpc's
own message types (:class:`~fastwsrpc.protocol.Request`,
:class:`~fastwsrpc.protocol.Response`, :class:`~fastwsrpc.protocol.ErrorObject`),
because those are what calls return here: annotations, ``isinstance`` checks,
keyword construction (``JsonRpcResponse(id=1, result=3)``) and reading
``.id``/``.result``/``.error.code`` work unchanged. They are msgspec Structs,
not pydantic models: there is no ``model_dump()``/``model_validate()`` (use
``msgspec.structs.asdict`` or send plain dicts), and ``JsonRpcRequest`` takes no
``jsonrpc=`` argument (the version is implied).

``WebSocketFrameType`` belongs to the FastAPI endpoint, which imports Starlette:
it is resolved on first use (PEP 562), so a client that imports this module for
the message types does not load Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import JsonRpcErrorCode
from .protocol import MAX_ID_LENGTH
from .protocol import ErrorObject as JsonRpcError
from .protocol import Request as JsonRpcRequest
from .protocol import Response as JsonRpcResponse

if TYPE_CHECKING:
    from .endpoint import WebSocketFrameType as WebSocketFrameType
else:  # hidden from mypy, which would otherwise type any misspelt name as Any

    def __getattr__(name: str) -> Any:
        """PEP 562: ``WebSocketFrameType`` imports the endpoint (and Starlette), so only when named."""
        if name == "WebSocketFrameType":
            from .endpoint import WebSocketFrameType

            globals()[name] = WebSocketFrameType
            return WebSocketFrameType
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: fastapi-ws-rpc's alias for id strings.
UUID = str
#: Longest string id accepted; longer ones are refused as an invalid request.
MAX_REQUEST_ID_LENGTH = MAX_ID_LENGTH

__all__ = [
    "MAX_REQUEST_ID_LENGTH",
    "UUID",
    "JsonRpcError",
    "JsonRpcErrorCode",
    "JsonRpcRequest",
    "JsonRpcResponse",
    "WebSocketFrameType",
]
