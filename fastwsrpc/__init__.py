"""fastwsrpc: a fast, durable, bidirectional JSON-RPC 2.0 channel over WebSockets.

``__all__`` holds what a user writes: the client, the FastAPI endpoint, the
native server and ``run``, the methods base, the config objects, the channel
(for annotations) and the exceptions worth catching. Every other name lives in
the module that defines it: the whole error tree in :mod:`fastwsrpc.errors`,
the messages in :mod:`fastwsrpc.protocol`, the transport in
:mod:`fastwsrpc.transport`, the hot-path engine (``decode``, ``classify``,
``check_size``, ``PendingTable``) in :mod:`fastwsrpc._accel`. The names the
package exported before stay importable from it (``from fastwsrpc import
RpcParseError`` works); they are just not in ``__all__``.

Nothing is imported until it is used (PEP 562): ``import fastwsrpc`` loads only
the version, and a client-only program never loads FastAPI, Starlette or
uvicorn; the endpoint loads them when it is first named.

A drop-in superset of ``fastapi-ws-rpc`` 1.x: replace ``from fastapi_ws_rpc import``
with ``from fastwsrpc import``. ``IMPLEMENTATION`` says which twin of the hot
path is live: ``"cython"`` (compiled) or ``"python"``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List

from ._version import __version__ as __version__

__all__ = [
    "HandshakeRequest",
    "LoggingModes",
    "NoResponse",
    "RemoteValueError",
    "RpcBackpressureConfig",
    "RpcBackpressureError",
    "RpcChannel",
    "RpcChannelClosedError",
    "RpcConnectionConfig",
    "RpcConnectionError",
    "RpcDebugConfig",
    "RpcError",
    "RpcHandshakeRejectedError",
    "RpcKeepaliveConfig",
    "RpcMethodsBase",
    "RpcRetryConfig",
    "RpcSettings",
    "RpcTimeoutError",
    "RpcUtilityMethods",
    "UnknownMethodError",
    "WebSocketConnectionConfig",
    "WebSocketRpcClient",
    "WebSocketRpcClientConfig",
    "WebSocketRpcEndpoint",
    "WebSocketRpcServer",
    "logging_config",
    "run",
]

#: Where each name of the package lives: imported on first use, then cached in
#: the module's namespace. Holds ``__all__`` and every name exported before it
#: was cut down (those are importable, not advertised).
_LAZY: Dict[str, str] = {
    # the hot path's engine, and which twin is live
    "IMPLEMENTATION": "_accel",
    "PendingTable": "_accel",
    "check_size": "_accel",
    "classify": "_accel",
    "decode": "_accel",
    # the channel and its callback types
    "OnConnectCallback": "channel",
    "OnDisconnectCallback": "channel",
    "OnErrorCallback": "channel",
    "RpcCaller": "channel",
    "RpcChannel": "channel",
    "RpcPromise": "channel",
    # the client (websockets; no FastAPI, Starlette or uvicorn)
    "WebSocketRpcClient": "client",
    "WebsocketsTransport": "client",
    # configuration
    "RpcBackpressureConfig": "config",
    "RpcConnectionConfig": "config",
    "RpcDebugConfig": "config",
    "RpcKeepaliveConfig": "config",
    "RpcRetryConfig": "config",
    "RpcSettings": "config",
    "WebSocketConnectionConfig": "config",
    "WebSocketRpcClientConfig": "config",
    # the FastAPI endpoint (imports Starlette)
    "ConnectionManager": "endpoint",
    "StarletteTransport": "endpoint",
    "WebSocketFrameType": "endpoint",
    "WebSocketRpcEndpoint": "endpoint",
    # the error tree
    "JsonRpcErrorCode": "errors",
    "RemoteValueError": "errors",
    "RpcBackpressureError": "errors",
    "RpcBrokerUnavailableError": "errors",
    "RpcChannelClosedError": "errors",
    "RpcClientNotFoundError": "errors",
    "RpcConnectionError": "errors",
    "RpcDuplicateClientError": "errors",
    "RpcError": "errors",
    "RpcHandshakeRejectedError": "errors",
    "RpcInternalError": "errors",
    "RpcInvalidParamsError": "errors",
    "RpcInvalidRequestError": "errors",
    "RpcInvalidStateError": "errors",
    "RpcMessageTooLargeError": "errors",
    "RpcNotConnectedError": "errors",
    "RpcParseError": "errors",
    "RpcServerOverloadedError": "errors",
    "RpcTimeoutError": "errors",
    "RpcUsageError": "errors",
    "UnknownMethodError": "errors",
    # logging
    "LoggingModes": "logger",
    "get_logger": "logger",
    "logging_config": "logger",
    # what one side exposes
    "NoResponse": "methods",
    "ProcessDetails": "methods",
    "RpcMethodsBase": "methods",
    "RpcUtilityMethods": "methods",
    # the messages
    "Batch": "protocol",
    "ErrorObject": "protocol",
    "Invalid": "protocol",
    "Notification": "protocol",
    "Request": "protocol",
    "Response": "protocol",
    # the native server
    "HandshakeRequest": "server",
    "WebSocketRpcServer": "server",
    "run": "server",
    # the transport protocol
    "Transport": "transport",
    "TransportClosed": "transport",
    # fastapi-ws-rpc's helper
    "gen_uid": "utils",
}

#: Submodules that ``import fastwsrpc`` used to load, so ``fastwsrpc.errors.X``
#: worked after a bare ``import fastwsrpc``; they still resolve, on first use.
_SUBMODULES: FrozenSet[str] = frozenset(
    {
        "_accel",
        "_speedups_py",
        "budget",
        "callbacks",
        "channel",
        "client",
        "compat",
        "config",
        "dispatch",
        "endpoint",
        "errors",
        "frames",
        "interceptors",
        "logger",
        "methods",
        "native",
        "origin",
        "outgoing",
        "protocol",
        "server",
        "service",
        "streams",
        "topics",
        "transport",
        "typed",
        "utils",
        "uvicorn_direct",
        "watchdog",
    }
)

if TYPE_CHECKING:  # what mypy and IDEs see: the same names, imported for real
    from ._accel import IMPLEMENTATION as IMPLEMENTATION
    from ._accel import PendingTable as PendingTable
    from ._accel import check_size as check_size
    from ._accel import classify as classify
    from ._accel import decode as decode
    from .channel import OnConnectCallback as OnConnectCallback
    from .channel import OnDisconnectCallback as OnDisconnectCallback
    from .channel import OnErrorCallback as OnErrorCallback
    from .channel import RpcCaller as RpcCaller
    from .channel import RpcChannel as RpcChannel
    from .channel import RpcPromise as RpcPromise
    from .client import WebSocketRpcClient as WebSocketRpcClient
    from .client import WebsocketsTransport as WebsocketsTransport
    from .config import RpcBackpressureConfig as RpcBackpressureConfig
    from .config import RpcConnectionConfig as RpcConnectionConfig
    from .config import RpcDebugConfig as RpcDebugConfig
    from .config import RpcKeepaliveConfig as RpcKeepaliveConfig
    from .config import RpcRetryConfig as RpcRetryConfig
    from .config import RpcSettings as RpcSettings
    from .config import WebSocketConnectionConfig as WebSocketConnectionConfig
    from .config import WebSocketRpcClientConfig as WebSocketRpcClientConfig
    from .endpoint import ConnectionManager as ConnectionManager
    from .endpoint import StarletteTransport as StarletteTransport
    from .endpoint import WebSocketFrameType as WebSocketFrameType
    from .endpoint import WebSocketRpcEndpoint as WebSocketRpcEndpoint
    from .errors import JsonRpcErrorCode as JsonRpcErrorCode
    from .errors import RemoteValueError as RemoteValueError
    from .errors import RpcBackpressureError as RpcBackpressureError
    from .errors import RpcBrokerUnavailableError as RpcBrokerUnavailableError
    from .errors import RpcChannelClosedError as RpcChannelClosedError
    from .errors import RpcClientNotFoundError as RpcClientNotFoundError
    from .errors import RpcConnectionError as RpcConnectionError
    from .errors import RpcDuplicateClientError as RpcDuplicateClientError
    from .errors import RpcError as RpcError
    from .errors import RpcHandshakeRejectedError as RpcHandshakeRejectedError
    from .errors import RpcInternalError as RpcInternalError
    from .errors import RpcInvalidParamsError as RpcInvalidParamsError
    from .errors import RpcInvalidRequestError as RpcInvalidRequestError
    from .errors import RpcInvalidStateError as RpcInvalidStateError
    from .errors import RpcMessageTooLargeError as RpcMessageTooLargeError
    from .errors import RpcNotConnectedError as RpcNotConnectedError
    from .errors import RpcParseError as RpcParseError
    from .errors import RpcServerOverloadedError as RpcServerOverloadedError
    from .errors import RpcTimeoutError as RpcTimeoutError
    from .errors import RpcUsageError as RpcUsageError
    from .errors import UnknownMethodError as UnknownMethodError
    from .logger import LoggingModes as LoggingModes
    from .logger import get_logger as get_logger
    from .logger import logging_config as logging_config
    from .methods import NoResponse as NoResponse
    from .methods import ProcessDetails as ProcessDetails
    from .methods import RpcMethodsBase as RpcMethodsBase
    from .methods import RpcUtilityMethods as RpcUtilityMethods
    from .protocol import Batch as Batch
    from .protocol import ErrorObject as ErrorObject
    from .protocol import Invalid as Invalid
    from .protocol import Notification as Notification
    from .protocol import Request as Request
    from .protocol import Response as Response
    from .server import HandshakeRequest as HandshakeRequest
    from .server import WebSocketRpcServer as WebSocketRpcServer
    from .server import run as run
    from .transport import Transport as Transport
    from .transport import TransportClosed as TransportClosed
    from .utils import gen_uid as gen_uid
else:
    # Hidden from type checkers: with a module ``__getattr__`` in sight, mypy would
    # type every misspelt ``fastwsrpc.X`` as Any instead of reporting it.

    def __getattr__(name: str) -> Any:
        """PEP 562: import the module that defines ``name`` on first use, then cache it."""
        if name in _LAZY:
            module = f"{__name__}.{_LAZY[name]}"
        elif name in _SUBMODULES:
            module = f"{__name__}.{name}"
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        # __import__, not importlib.import_module: the latter bypasses the hook of
        # `python -X importtime`, which would then not show what this import costs.
        __import__(module)
        value = sys.modules[module] if name in _SUBMODULES else getattr(sys.modules[module], name)
        globals()[name] = value
        return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
