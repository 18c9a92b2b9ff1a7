"""fastapi-ws-rpc 1.x's public module paths exist under fastwsrpc, as thin aliases.

User code migrates by swapping the package name: ``fastapi_ws_rpc.X`` becomes
``fastwsrpc.X`` for every public module of 1.2. The aliases hold fastwsrpc's
own objects (identity, not copies), so ``isinstance`` and ``except`` agree
whichever path a name was imported from.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any, Dict, List, TypeVar

import pytest

import fastwsrpc

#: Every public module of fastapi-ws-rpc 1.2 (its ``_internal`` package is private).
PEER_MODULES = [
    "config",
    "connection_manager",
    "exceptions",
    "logger",
    "rpc_channel",
    "rpc_methods",
    "schemas",
    "simplewebsocket",
    "utils",
    "websocket_rpc_client",
    "websocket_rpc_endpoint",
]

#: The names the peer's README and ``__init__`` import, by module.
README_NAMES: Dict[str, List[str]] = {
    "config": [
        "RpcBackpressureConfig",
        "RpcConnectionConfig",
        "RpcDebugConfig",
        "RpcKeepaliveConfig",
        "RpcRetryConfig",
        "WebSocketConnectionConfig",
        "WebSocketRpcClientConfig",
    ],
    "connection_manager": ["ConnectionManager"],
    "exceptions": [
        "RemoteValueError",
        "RpcBackpressureError",
        "RpcChannelClosedError",
        "RpcError",
        "RpcInvalidStateError",
        "RpcMessageTooLargeError",
        "UnknownMethodError",
    ],
    "logger": ["LoggingModes", "get_logger", "logging_config"],
    "rpc_channel": ["OnConnectCallback", "OnDisconnectCallback", "OnErrorCallback", "RpcChannel"],
    "rpc_methods": ["NoResponse", "RpcMethodsBase", "RpcUtilityMethods"],
    "schemas": ["JsonRpcError", "JsonRpcErrorCode", "JsonRpcRequest", "JsonRpcResponse", "WebSocketFrameType"],
    "simplewebsocket": ["JsonSerializingWebSocket", "SerializingSocketProtocol", "SimpleWebSocket"],
    "utils": ["gen_uid"],
    "websocket_rpc_client": ["WebSocketRpcClient"],
    "websocket_rpc_endpoint": ["WebSocketRpcEndpoint"],
}


@pytest.mark.parametrize("module", PEER_MODULES)
def test_each_alias_module_imports_and_its_names_resolve(module: str) -> None:
    mod = importlib.import_module(f"fastwsrpc.{module}")
    for name in README_NAMES[module]:
        assert getattr(mod, name) is not None, f"fastwsrpc.{module}.{name}"
    for name in getattr(mod, "__all__", ()):
        assert hasattr(mod, name), f"fastwsrpc.{module}.__all__ names missing {name}"


@pytest.mark.parametrize("module", PEER_MODULES)
def test_aliases_are_fastwsrpcs_own_objects(module: str) -> None:
    mod = importlib.import_module(f"fastwsrpc.{module}")
    for name in README_NAMES[module]:
        if hasattr(fastwsrpc, name):
            assert getattr(mod, name) is getattr(fastwsrpc, name), f"fastwsrpc.{module}.{name} is a copy"


def test_names_the_peer_readme_imports_by_path() -> None:
    # The README's own import lines, with only the package name swapped.
    from fastwsrpc.logger import LoggingModes, logging_config
    from fastwsrpc.rpc_channel import RpcChannel
    from fastwsrpc.rpc_methods import RpcMethodsBase, RpcUtilityMethods
    from fastwsrpc.websocket_rpc_client import WebSocketRpcClient
    from fastwsrpc.websocket_rpc_endpoint import WebSocketRpcEndpoint

    assert issubclass(RpcUtilityMethods, RpcMethodsBase)
    assert WebSocketRpcClient is fastwsrpc.WebSocketRpcClient
    assert WebSocketRpcEndpoint is fastwsrpc.WebSocketRpcEndpoint
    assert RpcChannel is fastwsrpc.RpcChannel
    assert logging_config is fastwsrpc.logging_config and LoggingModes.UVICORN


def test_exceptions_alias_is_the_errors_module_hierarchy() -> None:
    from fastwsrpc import errors, exceptions

    for name in exceptions.__all__:
        assert getattr(exceptions, name) is getattr(errors, name)
    assert issubclass(exceptions.UnknownMethodError, exceptions.RpcError)


def test_gen_uid_is_a_uuid4_hex_string() -> None:
    from fastwsrpc.utils import gen_token, gen_uid

    uids = {gen_uid() for _ in range(100)}
    assert len(uids) == 100
    for uid in uids:
        assert re.fullmatch(r"[0-9a-f]{32}", uid) and uid[12] == "4"  # the uuid version digit
    assert re.fullmatch(r"[0-9a-f]{64}", gen_token())
    assert len(gen_token(128)) == 32
    with pytest.raises(ValueError):
        gen_token(7)


def test_schemas_names_are_the_messages_calls_return() -> None:
    from fastwsrpc.protocol import ErrorObject, Request, Response
    from fastwsrpc.schemas import (
        MAX_REQUEST_ID_LENGTH,
        JsonRpcError,
        JsonRpcErrorCode,
        JsonRpcRequest,
        JsonRpcResponse,
        WebSocketFrameType,
    )

    assert (JsonRpcRequest, JsonRpcResponse, JsonRpcError) == (Request, Response, ErrorObject)
    response = JsonRpcResponse(id="1", error=JsonRpcError(code=JsonRpcErrorCode.METHOD_NOT_FOUND, message="nope"))
    assert response.error is not None and response.error.code == -32601 and response.jsonrpc == "2.0"
    assert JsonRpcRequest(method="add", params={"a": 1}, id=1).method == "add"
    assert int(JsonRpcErrorCode.INVALID_PARAMS) == -32602 and WebSocketFrameType.Text.value == "text"
    assert MAX_REQUEST_ID_LENGTH == 256


def test_socket_layer_names_import_but_say_what_to_do_instead() -> None:
    from fastwsrpc.simplewebsocket import DEFAULT_MAX_MESSAGE_SIZE, JsonSerializingWebSocket, SimpleWebSocket

    assert DEFAULT_MAX_MESSAGE_SIZE == 10 * 1024 * 1024
    with pytest.raises(TypeError, match=re.escape("fastwsrpc.transport.Transport")):
        JsonSerializingWebSocket()
    with pytest.raises(TypeError, match="cannot subclass SimpleWebSocket"):

        class MySocket(SimpleWebSocket):
            pass

    # 1.x code that passes the default explicitly keeps working (the argument is ignored).
    client = fastwsrpc.WebSocketRpcClient("ws://127.0.0.1:9/ws", serializing_socket_cls=JsonSerializingWebSocket)
    assert client.uri == "ws://127.0.0.1:9/ws"


def test_rpc_methods_and_client_constants() -> None:
    from fastwsrpc import rpc_methods, websocket_rpc_client

    assert rpc_methods.PING_RESPONSE == "pong" and rpc_methods.EXPOSED_BUILT_IN_METHODS == ["ping", "_get_channel_id_"]
    assert websocket_rpc_client.WS_CLOSE_CODE_POLICY_VIOLATION == 1008
    assert websocket_rpc_client.MESSAGE_RECEIVE_TIMEOUT == 60.0


async def test_peer_readme_client_runs_with_the_package_name_swapped(url: str) -> None:
    # fastapi-ws-rpc's README client, verbatim but for "fastapi_ws_rpc" -> "fastwsrpc" in module paths.
    from fastwsrpc.rpc_methods import RpcMethodsBase
    from fastwsrpc.websocket_rpc_client import WebSocketRpcClient

    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        response = await client.other.concat(a="hello", b=" world")
        assert response.result == "hello world"


def _defined_public_names(peer_module: Any) -> List[str]:
    """Names a peer module defines itself (not what it merely imports), constants included."""
    names = []
    for name, value in vars(peer_module).items():
        if name.startswith("_") or name == "TYPE_CHECKING" or inspect.ismodule(value):
            continue
        origin = getattr(value, "__module__", None)
        if inspect.isclass(value) or inspect.isfunction(value):
            if origin != peer_module.__name__:
                continue  # imported from elsewhere (another module of theirs, typing, pydantic...)
        elif not name.isupper() or isinstance(value, TypeVar):
            continue  # module-level loggers and type variables
        names.append(name)
    return names


#: Public names of 1.2's modules deliberately not carried over (its own internals' helpers).
NOT_CARRIED_OVER = {
    "utils": {"RandomUtils", "StringUtils", "is_pydantic_pre_v2", "pydantic_parse", "pydantic_serialize"},
    "websocket_rpc_endpoint": {"WebSocketSimplifier"},
}


@pytest.mark.skipif(sys.version_info < (3, 10), reason="fastapi-ws-rpc 1.2 needs Python 3.10+")
@pytest.mark.parametrize("module", PEER_MODULES)
def test_every_public_name_of_the_installed_peer_module_exists_here(module: str) -> None:
    pytest.importorskip("fastapi_ws_rpc")
    peer = importlib.import_module(f"fastapi_ws_rpc.{module}")
    ours = importlib.import_module(f"fastwsrpc.{module}")
    expected = set(_defined_public_names(peer)) - NOT_CARRIED_OVER.get(module, set())
    missing = sorted(name for name in expected if not hasattr(ours, name))
    assert not missing, f"fastwsrpc.{module} lacks {missing}"
