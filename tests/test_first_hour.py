"""What a new user trips over in the first hour (issue "a safe door and a clear first hour")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from fastwsrpc import RemoteValueError, RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient, WebSocketRpcEndpoint
from fastwsrpc.server import WebSocketRpcServer

from .support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Methods(RpcMethodsBase):
    async def add(self, a: int, b: int) -> int:
        return a + b


@pytest.mark.parametrize("build", [WebSocketRpcEndpoint, WebSocketRpcServer], ids=["endpoint", "server"])
def test_constructors_refuse_a_methods_class_or_a_stranger_naming_themselves(build: Any) -> None:
    name = build.__name__
    with pytest.raises(TypeError, match=rf"{name}\(\) takes an instance of your methods class: {name}\(Methods\(\)\)"):
        build(Methods)
    with pytest.raises(TypeError, match=rf"{name}\(\): methods must be an RpcMethodsBase instance, got object"):
        build(object())
    with pytest.raises(TypeError, match=rf"{name}\(\): max_message_size must be an int, got 'big'"):
        build(Methods(), max_message_size="big")
    with pytest.raises(TypeError, match=rf"{name}\(\): idle_timeout must be a number of seconds"):
        build(Methods(), idle_timeout="soon")


def test_a_misspelt_keyword_of_the_native_server_is_named_with_a_suggestion() -> None:
    with pytest.raises(TypeError, match=r"WebSocketRpcServer\(\) got an unexpected keyword argument 'ping_intervl' "):
        WebSocketRpcServer(Methods(), ping_intervl=3)
    with pytest.raises(TypeError, match=r"did you mean 'max_pending_requests'\?"):
        WebSocketRpcServer(Methods(), max_pendng_requests=3)


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["native", "fastapi"])
async def test_a_crashing_method_prints_its_traceback_by_default(kind: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WS_RPC_LOGGING"}
    command = [sys.executable, "-m", "tests.crash_app", kind, str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        retry = RpcRetryConfig(max_attempts=200, min_wait=0.05, max_wait=0.1)  # until the process listens
        async with WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws", retry_config=retry) as client:
            with pytest.raises(RemoteValueError, match="Internal error"):
                await client.other.divide(a=1, b=0)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err, err
    assert "method divide failed" in err
    if kind == "native":
        assert f"fastwsrpc: serving on ws://127.0.0.1:{port}/ws" in err


class Big(RpcMethodsBase):
    async def big(self) -> str:
        return "x" * 20_000


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["native", "websockets"])
async def test_an_oversized_answer_says_its_size_and_the_limit(transport: str) -> None:
    from fastwsrpc import RpcChannelClosedError

    from .support import serve_methods

    with serve_methods("native", Big()) as srv:
        async with WebSocketRpcClient(srv.url(), transport=transport, max_message_size=10_000) as client:
            with pytest.raises(RpcChannelClosedError, match=r"1009.*(20036|exceeds)") as failed:
                await client.other.big()
    message = str(failed.value)
    assert "10000" in message and "20036" in message, message


@pytest.mark.e2e
async def test_a_wrong_path_or_an_http_url_says_what_to_do(server_kind: str) -> None:
    from fastwsrpc import RpcHandshakeRejectedError, RpcUsageError

    from .support import serve_methods

    with serve_methods(server_kind, Methods()) as srv:
        with pytest.raises(RpcHandshakeRejectedError, match="no endpoint at this path"):
            async with WebSocketRpcClient(srv.url("/nowhere"), retry_config=RpcRetryConfig(max_attempts=1)):
                pass
    with pytest.raises(RpcUsageError, match=r"did you mean 'ws://127\.0\.0\.1:1/ws'\?"):
        WebSocketRpcClient("http://127.0.0.1:1/ws")


def test_a_client_of_a_server_that_is_down_says_so_at_once() -> None:
    """No logging configured: the first failed attempt is on stderr before the retries go on."""
    port = free_port()
    script = (
        "import asyncio, fastwsrpc\n"
        f"async def main():\n    async with fastwsrpc.WebSocketRpcClient('ws://127.0.0.1:{port}/ws'): pass\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WS_RPC_LOGGING"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the first line it prints: the first failed attempt
        assert f"connect to ws://127.0.0.1:{port}/ws failed (attempt 1 of" in line, line
        assert "connection refused" in line.lower() or "is the server running" in line.lower(), line
    finally:
        proc.kill()
        proc.communicate(timeout=10)
