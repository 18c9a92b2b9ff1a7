"""fastwsrpc: a fast, durable, bidirectional JSON-RPC 2.0 channel over WebSockets.

The hot-path primitives (``decode``, ``classify``, ``check_size``,
``PendingTable``) stay importable from here but are not part of ``__all__``:
they are the engine, not the API.

A drop-in superset of ``fastapi-ws-rpc`` 1.x: replace ``from fastapi_ws_rpc import``
with ``from fastwsrpc import``. ``IMPLEMENTATION`` says which twin of the hot
path is live: ``"cython"`` (compiled) or ``"python"``.
"""

from ._accel import IMPLEMENTATION
from ._accel import PendingTable as PendingTable  # the engine: importable, not in __all__
from ._accel import check_size as check_size
from ._accel import classify as classify
from ._accel import decode as decode
from ._version import __version__
from .channel import (
    OnConnectCallback,
    OnDisconnectCallback,
    OnErrorCallback,
    RpcCaller,
    RpcChannel,
    RpcPromise,
)
from .client import WebSocketRpcClient, WebsocketsTransport
from .config import (
    RpcBackpressureConfig,
    RpcConnectionConfig,
    RpcDebugConfig,
    RpcKeepaliveConfig,
    RpcRetryConfig,
    RpcSettings,
    WebSocketConnectionConfig,
    WebSocketRpcClientConfig,
)
from .endpoint import ConnectionManager, StarletteTransport, WebSocketFrameType, WebSocketRpcEndpoint
from .errors import (
    JsonRpcErrorCode,
    RemoteValueError,
    RpcBackpressureError,
    RpcBrokerUnavailableError,
    RpcChannelClosedError,
    RpcClientNotFoundError,
    RpcConnectionError,
    RpcDuplicateClientError,
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
from .logger import LoggingModes, get_logger, logging_config
from .methods import NoResponse, ProcessDetails, RpcMethodsBase, RpcUtilityMethods
from .protocol import Batch, ErrorObject, Invalid, Notification, Request, Response
from .server import HandshakeRequest, WebSocketRpcServer, run
from .transport import Transport, TransportClosed
from .utils import gen_uid

__all__ = [
    "IMPLEMENTATION",
    "Batch",
    "ConnectionManager",
    "ErrorObject",
    "HandshakeRequest",
    "Invalid",
    "JsonRpcErrorCode",
    "LoggingModes",
    "NoResponse",
    "Notification",
    "OnConnectCallback",
    "OnDisconnectCallback",
    "OnErrorCallback",
    "ProcessDetails",
    "RemoteValueError",
    "Request",
    "Response",
    "RpcBackpressureConfig",
    "RpcBackpressureError",
    "RpcBrokerUnavailableError",
    "RpcCaller",
    "RpcChannel",
    "RpcChannelClosedError",
    "RpcClientNotFoundError",
    "RpcConnectionConfig",
    "RpcConnectionError",
    "RpcDebugConfig",
    "RpcDuplicateClientError",
    "RpcError",
    "RpcHandshakeRejectedError",
    "RpcInternalError",
    "RpcInvalidParamsError",
    "RpcInvalidRequestError",
    "RpcInvalidStateError",
    "RpcKeepaliveConfig",
    "RpcMessageTooLargeError",
    "RpcMethodsBase",
    "RpcNotConnectedError",
    "RpcParseError",
    "RpcPromise",
    "RpcRetryConfig",
    "RpcServerOverloadedError",
    "RpcSettings",
    "RpcTimeoutError",
    "RpcUsageError",
    "RpcUtilityMethods",
    "StarletteTransport",
    "Transport",
    "TransportClosed",
    "UnknownMethodError",
    "WebSocketConnectionConfig",
    "WebSocketFrameType",
    "WebSocketRpcClient",
    "WebSocketRpcClientConfig",
    "WebSocketRpcEndpoint",
    "WebSocketRpcServer",
    "WebsocketsTransport",
    "__version__",
    "gen_uid",
    "get_logger",
    "logging_config",
    "run",
]
