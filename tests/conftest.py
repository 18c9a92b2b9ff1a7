from __future__ import annotations

import importlib
import os
from typing import Any, Iterator

import pytest

import fastwsrpc
from fastwsrpc import _speedups_py

from .app import make_app
from .support import ServerThread

REQUIRE = bool(os.environ.get("FASTWSRPC_REQUIRE_EXTENSIONS"))

try:
    _compiled: Any = importlib.import_module("fastwsrpc._speedups")
except ImportError:  # pragma: no cover - only on machines without a compiler
    if REQUIRE:
        raise
    _compiled = None


def pytest_report_header(config: Any) -> str:
    return f"fastwsrpc implementation under test: {fastwsrpc.IMPLEMENTATION}"


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


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    """The shared test server (one per session; tests must not stop it)."""
    with ServerThread(make_app()) as srv:
        yield srv


@pytest.fixture
def url(server: ServerThread) -> str:
    return server.url("/ws")
