"""``import fastwsrpc`` and a client-only program load neither FastAPI, Starlette nor uvicorn.

Each check runs in a fresh interpreter (this one has imported everything
already): ``import fastwsrpc`` under ``-X importtime``, the names a client
imports, a client that connects, calls and is called back (on both servers,
with both client transports), and the fastapi-ws-rpc module paths a client
uses. The server side still loads them, when it is named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What a client must never load: the server-side web stack.
SERVER_STACK = ("fastapi", "starlette", "uvicorn")
#: Loaded only by fastapi-ws-rpc's ``RpcUtilityMethods``/``ProcessDetails`` (and typed methods that name a model).
PYDANTIC = ("pydantic", "pydantic_core")


def run_python(code: str, *args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter on this checkout; fail the test with its stderr if it fails."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", textwrap.dedent(code), *args]
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def modules_after(code: str, *args: str) -> List[str]:
    """The names in ``sys.modules`` once ``code`` has run (it must not print)."""
    done = run_python(textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n", *args)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def loaded(modules: List[str], packages: Tuple[str, ...]) -> List[str]:
    return sorted(name for name in modules if name.split(".")[0] in packages)


def test_import_fastwsrpc_loads_no_server_stack_under_importtime() -> None:
    # The check the issue names: what `python -X importtime -c "import fastwsrpc"` imports.
    done = run_python("import fastwsrpc", importtime=True)
    rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")]
    imported = [row[2].strip() for row in rows[1:]]  # the first row is the header
    assert "fastwsrpc" in imported
    assert loaded(imported, SERVER_STACK + PYDANTIC) == []
    # the package itself is the version and a table of where names live; nothing else of ours
    assert sorted(name for name in imported if name.startswith("fastwsrpc")) == ["fastwsrpc", "fastwsrpc._version"]


def test_the_names_a_client_imports_load_no_server_stack() -> None:
    modules = modules_after(
        """
        import fastwsrpc
        from fastwsrpc import WebSocketRpcClient, RpcMethodsBase
        from fastwsrpc import RpcChannel, RpcError, RpcConnectionError, RpcTimeoutError, RemoteValueError
        from fastwsrpc import WebSocketRpcClientConfig, RpcRetryConfig, logging_config, LoggingModes
        from fastwsrpc.errors import RpcParseError
        assert fastwsrpc.IMPLEMENTATION in ("cython", "python")
        """
    )
    assert "fastwsrpc.client" in modules
    assert loaded(modules, SERVER_STACK) == []
    assert loaded(modules, PYDANTIC) == []
    assert "fastwsrpc.endpoint" not in modules and "fastwsrpc.server" not in modules


CLIENT_PROGRAM = """
import asyncio
import sys

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient


class ClientMethods(RpcMethodsBase):
    async def multiply(self, x: int, y: int) -> int:
        return x * y


async def main(url: str, transport: str) -> None:
    async with WebSocketRpcClient(url, ClientMethods(), transport=transport) as client:
        assert (await client.other.concat(a="hello", b=" world")).result == "hello world"
        # the server calls this client back while answering
        assert (await client.other.call_client(method="multiply", params={"x": 6, "y": 7})).result == 42
        assert await client.channel.ping()


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["native", "websockets"])
def test_a_client_that_connects_and_calls_loads_no_server_stack(url: str, transport: str) -> None:
    modules = modules_after(CLIENT_PROGRAM, url, transport)
    assert loaded(modules, SERVER_STACK) == []
    assert loaded(modules, PYDANTIC) == []


#: fastapi-ws-rpc's module paths a client-only program imports.
CLIENT_ALIASES = [
    "config",
    "exceptions",
    "logger",
    "rpc_channel",
    "schemas",
    "simplewebsocket",
    "utils",
    "websocket_rpc_client",
]


def test_the_fastapi_ws_rpc_client_paths_load_no_server_stack() -> None:
    modules = modules_after(
        "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module('fastwsrpc.' + name)",
        *CLIENT_ALIASES,
    )
    assert loaded(modules, SERVER_STACK) == []
    assert loaded(modules, PYDANTIC) == []


def test_the_server_side_still_loads_when_named() -> None:
    # Lazy, not gone: naming the endpoint imports it (and Starlette), the utility
    # methods import pydantic, and each is the object its module defines.
    modules = modules_after(
        """
        import fastwsrpc
        from fastwsrpc.endpoint import WebSocketRpcEndpoint
        from fastwsrpc.rpc_methods import ProcessDetails, RpcUtilityMethods
        from fastwsrpc.websocket_rpc_endpoint import WebSocketFrameType
        import fastwsrpc.schemas
        assert fastwsrpc.WebSocketRpcEndpoint is WebSocketRpcEndpoint
        assert fastwsrpc.RpcUtilityMethods is RpcUtilityMethods and fastwsrpc.ProcessDetails is ProcessDetails
        assert fastwsrpc.schemas.WebSocketFrameType is WebSocketFrameType is fastwsrpc.WebSocketFrameType
        """
    )
    assert "starlette" in modules and "pydantic" in modules


def test_a_star_import_gives_exactly_all() -> None:
    done = run_python(
        """
        import json
        before = set(globals())
        from fastwsrpc import *
        import fastwsrpc
        print(json.dumps([sorted(set(globals()) - before - {"before", "fastwsrpc"}), fastwsrpc.__all__]))
        """
    )
    got, expected = json.loads(done.stdout)
    assert got == sorted(expected)


def test_attribute_errors_stay_attribute_errors() -> None:
    done = run_python(
        """
        import fastwsrpc
        assert not hasattr(fastwsrpc, "WebSocketRpcClent")
        assert not hasattr(fastwsrpc, "cli")  # never loaded by the package: import it by path
        try:
            fastwsrpc.nope
        except AttributeError as exc:
            assert str(exc) == "module 'fastwsrpc' has no attribute 'nope'", exc
        print(sorted(name for name in ("fastwsrpc.client", "fastwsrpc.cli") if name in __import__("sys").modules))
        """
    )
    assert done.stdout.strip() == "[]"
