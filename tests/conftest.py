from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Any, Iterator

import pytest

import fastwsrpc
from fastwsrpc import _speedups_py
from fastwsrpc import client as _client

from .support import SERVER_KINDS, start_server

REQUIRE = bool(os.environ.get("FASTWSRPC_REQUIRE_EXTENSIONS"))

try:
    _compiled: Any = importlib.import_module("fastwsrpc._speedups")
except ImportError:  # pragma: no cover - only on machines without a compiler
    if REQUIRE:
        raise
    _compiled = None


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--client-transport",
        choices=("native", "websockets"),
        default="native",
        help="transport of every WebSocketRpcClient that names none (run the suite once with each)",
    )


def pytest_configure(config: Any) -> None:
    _client.DEFAULT_TRANSPORT = config.getoption("--client-transport")
    if sys.version_info < (3, 10):
        # pytest-asyncio 1.2 (the last for 3.9) asks for the current loop before each
        # async test, and 3.9 makes one then; the first asyncio.run() of a sync test
        # (the CLI's) unsets it, and it is collected unclosed (ResourceWarning). With
        # the loop explicitly unset, 3.9 makes none.
        asyncio.set_event_loop(None)


def pytest_report_header(config: Any) -> str:
    return (
        f"fastwsrpc implementation under test: {fastwsrpc.IMPLEMENTATION}; "
        f"client transport: {config.getoption('--client-transport')}"
    )


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("py", id="py"),
        pytest.param("cython", id="cython"),
    ],
)
def speedups(request: Any) -> Any:
    """Each twin of the hot path in turn, for tests that call it directly."""
    if request.param == "py":
        return _speedups_py
    if _compiled is None:
        pytest.skip("compiled speedups not built on this machine")
    return _compiled


@pytest.fixture(scope="session")
def compiled() -> Any:
    if _compiled is None:
        pytest.skip("compiled speedups not built on this machine")
    return _compiled


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server_kind(request: Any) -> str:
    """``fastapi`` (the endpoint under uvicorn) or ``native`` (``fastwsrpc.server``): every e2e test runs on both."""
    return str(request.param)


@pytest.fixture(scope="session")
def server(server_kind: str) -> Iterator[Any]:
    """The shared test server of each kind (one per session and kind; tests must not stop it)."""
    with start_server(server_kind) as srv:
        yield srv


@pytest.fixture
def url(server: Any) -> str:
    return str(server.url("/ws"))
