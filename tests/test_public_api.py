"""The public surface: names, docstrings, the error tree, and what a type checker sees."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import pydoc
import sys
from typing import Any, Dict, List

import pytest

import fastwsrpc
from fastwsrpc import errors
from fastwsrpc.transport import TransportClosed

HERE = os.path.dirname(os.path.abspath(__file__))

#: ``fastwsrpc.__all__``: what a user writes. A change to the public surface is a
#: decision, so it changes this list too (and docs/reference/index.md).
PUBLIC = [
    # connect, serve, expose
    "WebSocketRpcClient",
    "WebSocketRpcEndpoint",
    "WebSocketRpcServer",
    "run",
    "HandshakeRequest",
    "RpcChannel",
    "RpcMethodsBase",
    "RpcUtilityMethods",
    "NoResponse",
    # configuration
    "RpcSettings",
    "WebSocketRpcClientConfig",
    "WebSocketConnectionConfig",
    "RpcConnectionConfig",
    "RpcBackpressureConfig",
    "RpcKeepaliveConfig",
    "RpcRetryConfig",
    "RpcDebugConfig",
    "logging_config",
    "LoggingModes",
    # the exceptions people catch (the whole tree is in fastwsrpc.errors)
    "RpcError",
    "RemoteValueError",
    "UnknownMethodError",
    "RpcTimeoutError",
    "RpcChannelClosedError",
    "RpcConnectionError",
    "RpcHandshakeRejectedError",
    "RpcBackpressureError",
]

#: ``fastwsrpc.__all__`` before it was cut down (62 names), each with the module
#: that defines it: every one still resolves from the package, as the same object.
FORMER_ALL: Dict[str, str] = {
    "IMPLEMENTATION": "fastwsrpc._accel",
    "Batch": "fastwsrpc.protocol",
    "ConnectionManager": "fastwsrpc.endpoint",
    "ErrorObject": "fastwsrpc.protocol",
    "HandshakeRequest": "fastwsrpc.server",
    "Invalid": "fastwsrpc.protocol",
    "JsonRpcErrorCode": "fastwsrpc.errors",
    "LoggingModes": "fastwsrpc.logger",
    "NoResponse": "fastwsrpc.methods",
    "Notification": "fastwsrpc.protocol",
    "OnConnectCallback": "fastwsrpc.channel",
    "OnDisconnectCallback": "fastwsrpc.channel",
    "OnErrorCallback": "fastwsrpc.channel",
    "ProcessDetails": "fastwsrpc.rpc_methods",
    "RemoteValueError": "fastwsrpc.errors",
    "Request": "fastwsrpc.protocol",
    "Response": "fastwsrpc.protocol",
    "RpcBackpressureConfig": "fastwsrpc.config",
    "RpcBackpressureError": "fastwsrpc.errors",
    "RpcBrokerUnavailableError": "fastwsrpc.errors",
    "RpcCaller": "fastwsrpc.channel",
    "RpcChannel": "fastwsrpc.channel",
    "RpcChannelClosedError": "fastwsrpc.errors",
    "RpcClientNotFoundError": "fastwsrpc.errors",
    "RpcConnectionConfig": "fastwsrpc.config",
    "RpcConnectionError": "fastwsrpc.errors",
    "RpcDebugConfig": "fastwsrpc.config",
    "RpcDuplicateClientError": "fastwsrpc.errors",
    "RpcError": "fastwsrpc.errors",
    "RpcHandshakeRejectedError": "fastwsrpc.errors",
    "RpcInternalError": "fastwsrpc.errors",
    "RpcInvalidParamsError": "fastwsrpc.errors",
    "RpcInvalidRequestError": "fastwsrpc.errors",
    "RpcInvalidStateError": "fastwsrpc.errors",
    "RpcKeepaliveConfig": "fastwsrpc.config",
    "RpcMessageTooLargeError": "fastwsrpc.errors",
    "RpcMethodsBase": "fastwsrpc.methods",
    "RpcNotConnectedError": "fastwsrpc.errors",
    "RpcParseError": "fastwsrpc.errors",
    "RpcPromise": "fastwsrpc.channel",
    "RpcRetryConfig": "fastwsrpc.config",
    "RpcServerOverloadedError": "fastwsrpc.errors",
    "RpcSettings": "fastwsrpc.config",
    "RpcTimeoutError": "fastwsrpc.errors",
    "RpcUsageError": "fastwsrpc.errors",
    "RpcUtilityMethods": "fastwsrpc.rpc_methods",
    "StarletteTransport": "fastwsrpc.endpoint",
    "Transport": "fastwsrpc.transport",
    "TransportClosed": "fastwsrpc.transport",
    "UnknownMethodError": "fastwsrpc.errors",
    "WebSocketConnectionConfig": "fastwsrpc.config",
    "WebSocketFrameType": "fastwsrpc.endpoint",
    "WebSocketRpcClient": "fastwsrpc.client",
    "WebSocketRpcClientConfig": "fastwsrpc.config",
    "WebSocketRpcEndpoint": "fastwsrpc.endpoint",
    "WebSocketRpcServer": "fastwsrpc.server",
    "WebsocketsTransport": "fastwsrpc.client",
    "__version__": "fastwsrpc._version",
    "gen_uid": "fastwsrpc.utils",
    "get_logger": "fastwsrpc.logger",
    "logging_config": "fastwsrpc.logger",
    "run": "fastwsrpc.server",
}

#: Importable from the package but never in ``__all__``: the hot path's engine.
ENGINE = {name: "fastwsrpc._accel" for name in ("decode", "classify", "check_size", "PendingTable")}


def _public_members(cls: type) -> List[str]:
    """Public methods and properties of ``cls`` and its fastwsrpc bases (mixins included)."""
    names = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("fastwsrpc"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if inspect.isfunction(func) or isinstance(value, property):
                if not (func.__doc__ or "").strip():
                    names.append(f"{cls.__name__}.{name}")
    return names


def test_every_public_name_says_what_it_is_for() -> None:
    missing = []
    for name in sorted(set(fastwsrpc.__all__) | set(FORMER_ALL)):
        obj = getattr(fastwsrpc, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(name)
            if inspect.isclass(obj):
                missing += _public_members(obj)
    assert missing == []


def test_help_shows_readable_defaults() -> None:
    text = pydoc.render_doc(fastwsrpc.WebSocketRpcClient, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "<object object at" not in text and "= <default>" in text


def test_all_holds_the_users_names_not_the_engine() -> None:
    assert sorted(fastwsrpc.__all__) == sorted(PUBLIC)
    assert len(fastwsrpc.__all__) <= 40 and len(set(fastwsrpc.__all__)) == len(fastwsrpc.__all__)
    for engine in ENGINE:
        assert engine not in fastwsrpc.__all__
    # the whole error tree is one import away, not in the package's list
    tree = [name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)]
    assert len(tree) > 15 and len(set(tree) & set(fastwsrpc.__all__)) <= 8


@pytest.mark.parametrize("name", sorted(FORMER_ALL.items()) + sorted(ENGINE.items()), ids=lambda item: item[0])
def test_every_name_the_package_exported_still_resolves(name: Any) -> None:
    # Cutting __all__ down broke no import: each former name resolves from the
    # package, lazily, as the very object its module defines.
    name, module = name
    value = getattr(importlib.import_module(module), name)
    assert getattr(fastwsrpc, name) is value
    namespace: Dict[str, Any] = {}
    exec(f"from fastwsrpc import {name}", namespace)
    assert namespace[name] is value
    assert name in dir(fastwsrpc)


def test_submodules_the_package_used_to_load_resolve_as_attributes() -> None:
    # `import fastwsrpc; fastwsrpc.errors.RpcError` worked when the package imported
    # everything; it still does, the submodule being imported on first use.
    for name in ("errors", "client", "channel", "config", "protocol", "transport", "methods", "server", "endpoint"):
        assert getattr(fastwsrpc, name) is importlib.import_module(f"fastwsrpc.{name}")
    # a module renamed or removed is taken off the package's list too (hasattr must not raise)
    missing = [name for name in vars(fastwsrpc)["_SUBMODULES"] if importlib.util.find_spec(f"fastwsrpc.{name}") is None]
    assert missing == []


def test_what_mypy_sees_is_what_the_package_serves() -> None:
    """The ``if TYPE_CHECKING:`` imports of ``__init__`` and its lazy table name the same things."""
    with open(fastwsrpc.__file__, encoding="utf-8") as init:
        source = ast.parse(init.read())
    block = next(node for node in source.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1, ast.unparse(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: a re-export is spelled `X as X` for mypy --strict"
            seen[alias.name] = str(node.module)
    lazy = vars(fastwsrpc)["_LAZY"]
    assert seen == lazy
    assert set(fastwsrpc.__all__) <= set(lazy)
    assert set(FORMER_ALL) - {"__version__"} <= set(lazy)


def test_the_error_tree_is_drawn_and_true() -> None:
    tree = errors.__doc__ or ""
    for name in ("RpcError", "RpcConnectionError", "RpcHandshakeRejectedError", "RemoteValueError", "TransportClosed"):
        assert name in tree
    assert issubclass(TransportClosed, fastwsrpc.RpcError)
    assert issubclass(fastwsrpc.RpcConnectionError, ConnectionError)
    assert issubclass(fastwsrpc.RpcUsageError, ValueError)
    for cls in (fastwsrpc.RpcTimeoutError, fastwsrpc.RpcChannelClosedError):
        exc: Any = cls("x")
        assert exc.code is None or isinstance(exc.code, int)
        assert exc.data is None


@pytest.mark.skipif(sys.version_info < (3, 10), reason="the sample uses 3.10 annotations at check time")
def test_a_type_checker_sees_the_promised_types() -> None:
    """``self.channel`` needs no assert, ``result_type=T`` types ``.result``, ``RpcError`` has ``.code``."""
    api = pytest.importorskip("mypy.api", reason="mypy is in the test extra")
    sample, wrong = (os.path.join(HERE, "typing", name) for name in ("sample.py", "wrong.py"))
    stdout, stderr, _ = api.run(["--strict", "--follow-imports=silent", "--python-version", "3.10", sample, wrong])
    out = str(stdout) + str(stderr)
    assert "sample.py:" not in out, out
    assert 'wrong.py:19: error: Incompatible types in assignment (expression has type "User"' in out, out
