"""The public surface: names, docstrings, the error tree, and what a type checker sees."""

from __future__ import annotations

import inspect
import os
import pydoc
import sys
from typing import Any, List

import pytest

import fastwsrpc
from fastwsrpc import errors
from fastwsrpc.transport import TransportClosed

HERE = os.path.dirname(os.path.abspath(__file__))


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
    for name in fastwsrpc.__all__:
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
    for engine in ("decode", "classify", "check_size", "PendingTable"):
        assert engine not in fastwsrpc.__all__
        assert hasattr(fastwsrpc, engine)  # still importable, for those who used it
    assert {"WebSocketRpcClient", "WebSocketRpcEndpoint", "RpcMethodsBase", "RpcSettings"} <= set(fastwsrpc.__all__)


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
