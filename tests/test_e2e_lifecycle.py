"""Connections coming and going over real sockets: the adapters' hooks, server shutdown, refusals, retries.

What the channel does with its callbacks and when it closes is tested on a
memory pair in ``test_channel_lifecycle.py``; here, the endpoint and the
client wiring them to a socket, and what only a network shows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, List

import pytest

from fastwsrpc import (
    RpcChannel,
    RpcChannelClosedError,
    RpcHandshakeRejectedError,
    RpcKeepaliveConfig,
    RpcMethodsBase,
    RpcRetryConfig,
    WebSocketRpcClient,
    WebSocketRpcClientConfig,
)

from .app import PINGS, ServerMethods
from .support import ServerThread, bound_socket, eventually, serve_methods, start_server

pytestmark = pytest.mark.e2e


class Greeter(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.greetings: List[str] = []

    async def greet(self, name: str) -> str:
        self.greetings.append(name)
        return f"hello {name}"


async def test_server_on_connect_calls_the_client_and_on_disconnect_fires(server_kind: str) -> None:
    seen: List[Any] = []
    gone = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def on_connect(channel: RpcChannel) -> None:
        response = await channel.other.greet(name="from-server")
        seen.append(response.result)

    async def on_disconnect(channel: RpcChannel) -> None:
        loop.call_soon_threadsafe(gone.set)

    served = serve_methods(server_kind, ServerMethods(), on_connect=[on_connect], on_disconnect=[on_disconnect])
    client_events: List[str] = []

    async def client_connected(channel: RpcChannel) -> None:
        client_events.append("connect")

    async def client_disconnected(channel: RpcChannel) -> None:
        client_events.append("disconnect")

    with served as srv:
        async with WebSocketRpcClient(
            srv.url(), Greeter(), on_connect=[client_connected], on_disconnect=[client_disconnected]
        ) as client:
            await eventually(lambda: seen == ["hello from-server"])
            assert client.channel.methods.greetings == ["from-server"]  # type: ignore[union-attr]
        await asyncio.wait_for(gone.wait(), 10)
    assert client_events == ["connect", "disconnect"]


async def test_pending_calls_fail_when_the_server_goes_away(server_kind: str) -> None:
    with start_server(server_kind) as srv:
        client = WebSocketRpcClient(srv.url(), RpcMethodsBase())
        await client.__aenter__()
        calls = [asyncio.ensure_future(client.other.sleep(seconds=60)) for _ in range(5)]
        await eventually(lambda: client.channel.pending_count == 5)  # type: ignore[union-attr]
    # server stopped: every pending call fails at once, none hangs
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(r, RpcChannelClosedError) for r in results), results
    assert client.channel.pending_count == 0 and not client.is_connected  # type: ignore[union-attr]
    with pytest.raises(RpcChannelClosedError):
        await client.other.add(a=1, b=2)
    await client.close()


async def test_fastapi_dependency_refuses_a_connection_and_the_client_does_not_retry(
    server: ServerThread,
) -> None:
    retry = RpcRetryConfig(max_attempts=5, min_wait=0.01, max_wait=0.02)
    with pytest.raises(RpcHandshakeRejectedError) as refused:
        async with WebSocketRpcClient(server.url("/secure"), RpcMethodsBase(), retry_config=retry):
            pass
    assert refused.value.status == 403 and refused.value.response.status_code == 403
    async with WebSocketRpcClient(
        server.url("/secure"), RpcMethodsBase(), additional_headers={"x-token": "let-me-in"}
    ) as client:
        assert (await client.other.add(a=1, b=1)).result == 2
    # the original library's spelling of the headers keyword works too
    async with WebSocketRpcClient(
        server.url("/secure"), RpcMethodsBase(), extra_headers={"x-token": "let-me-in"}
    ) as client:
        assert (await client.other.add(a=2, b=2)).result == 4


class RetryLog(logging.Handler):
    """Counts the client's "connect ... failed ... retrying" warnings: each is one refused attempt."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.retries += 1


async def test_first_connect_is_retried_until_the_server_is_up(server_kind: str) -> None:
    # The port is bound but not listening: connections to it are refused, as to a server that is down.
    srv = start_server(server_kind, sock=bound_socket())
    retry = RpcRetryConfig(max_attempts=40, min_wait=0.05, max_wait=0.1)
    client = WebSocketRpcClient(srv.url(), RpcMethodsBase(), retry_config=retry)
    retries = RetryLog()
    client_log = logging.getLogger("fastwsrpc.client")
    client_log.addHandler(retries)
    try:
        connecting = asyncio.ensure_future(client.__aenter__())
        await eventually(lambda: retries.retries >= 2)
        assert not connecting.done()  # nothing listens yet: still retrying
        await asyncio.get_running_loop().run_in_executor(None, srv.start)
        await asyncio.wait_for(connecting, 20)
        assert (await client.other.add(a=1, b=2)).result == 3
        await client.close()
    finally:
        client_log.removeHandler(retries)
        srv.stop()


async def test_connect_failure_is_raised_when_retries_are_off() -> None:
    with bound_socket() as sock:  # bound, never listening: refused
        port = sock.getsockname()[1]
        with pytest.raises(OSError):
            async with WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws", RpcMethodsBase(), retry_config=False):
                pass


async def test_project_page_keywords_and_config_objects_are_both_accepted(url: str) -> None:
    client = WebSocketRpcClient(url, RpcMethodsBase(), keep_alive=5.0, max_consecutive_ping_failures=3)
    assert client.config.keepalive.interval == 5.0 and client.config.keepalive.max_failures == 3
    config = WebSocketRpcClientConfig(
        keepalive=RpcKeepaliveConfig(interval=30.0, use_protocol_ping=True, max_failures=2)
    )
    assert config.keepalive.max_consecutive_failures == 2
    assert RpcRetryConfig().max_attempts == 10 and RpcRetryConfig().max_wait == 60.0
    async with WebSocketRpcClient(url, RpcMethodsBase(), config=WebSocketRpcClientConfig.production_defaults()) as c:
        assert (await c.other.add(a=1, b=2)).result == 3
        assert c.channel.default_response_timeout == 30.0  # type: ignore[union-attr]


async def test_rpc_level_keepalive_keeps_a_healthy_connection(url: str) -> None:
    config = WebSocketRpcClientConfig(keepalive=RpcKeepaliveConfig(interval=0.05, use_protocol_ping=False))
    async with WebSocketRpcClient(url, RpcMethodsBase(), config=config) as client:
        before = len(PINGS)
        await eventually(lambda: len(PINGS) >= before + 3)  # three keepalive rounds answered
        assert client.is_connected
        assert (await client.other.add(a=1, b=2)).result == 3
