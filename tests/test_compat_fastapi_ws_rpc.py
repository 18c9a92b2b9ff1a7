"""Drop-in and on-the-wire compatibility with the real ``fastapi-ws-rpc`` 1.2 package.

Its client calls our server and is called back by it; our client calls its
server and is called back by it. (The package needs Python 3.10+; the Makefile
installs it with ``--no-deps`` beside ours.)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, List, Set

import pytest
from fastapi import FastAPI

import fastwsrpc

from .support import ServerThread, eventually

if sys.version_info < (3, 10):  # pragma: no cover
    pytest.skip("fastapi-ws-rpc 1.2 needs Python 3.10+", allow_module_level=True)
peer: Any = pytest.importorskip("fastapi_ws_rpc")

pytestmark = pytest.mark.e2e


class PeerClientMethods(peer.RpcMethodsBase):  # type: ignore[misc]
    async def multiply(self, x: int, y: int) -> int:
        return x * y


class OurClientMethods(fastwsrpc.RpcMethodsBase):
    async def multiply(self, x: int, y: int) -> int:
        return x * y


class PeerServerMethods(peer.RpcMethodsBase):  # type: ignore[misc]
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def call_client_result(self) -> Any:
        return CALLED_BACK


#: What the peer server got back when it called our client (see below).
CALLED_BACK: List[Any] = []


async def peer_on_connect(channel: Any) -> None:
    # The peer's read loop awaits its handlers (a nested call from inside one
    # deadlocks it), and it awaits on_connect callbacks before reading: so the
    # call back to our client runs in a task of its own, as its users must do.
    async def call_back() -> None:
        response = await channel.other.multiply(x=3, y=4)
        CALLED_BACK.append(response.result)

    _tasks.add(asyncio.ensure_future(call_back()))


_tasks: Set[Any] = set()


def peer_config() -> Any:
    return peer.WebSocketRpcClientConfig(retry=peer.RpcRetryConfig(enabled=False))


async def test_peer_client_calls_our_server_and_is_called_back(url: str) -> None:
    async with peer.WebSocketRpcClient(url, PeerClientMethods(), config=peer_config()) as client:
        assert (await client.other.add(a=1, b=2)).result == 3
        assert (await client.other.concat(a="hello", b=" world")).result == "hello world"
        back = await client.other.call_client(method="multiply", params={"x": 6, "y": 7})
        assert back.result == 42
        # a method of theirs that returns None answers without "result": we read it as null
        assert (await client.other.nothing()).result is None
        missing = await client.other.no_such_method()
        assert missing.error is not None and missing.error.code == -32601


async def test_our_client_calls_peer_server_and_is_called_back() -> None:
    app = FastAPI()
    peer.WebSocketRpcEndpoint(PeerServerMethods(), on_connect=[peer_on_connect]).register_route(app, "/ws")
    with ServerThread(app) as srv:
        async with fastwsrpc.WebSocketRpcClient(srv.url(), OurClientMethods()) as client:
            assert client.ws.subprotocol == "jsonrpc2.0"  # type: ignore[union-attr]
            assert (await client.other.add(a=2, b=3)).result == 5
            await eventually(lambda: CALLED_BACK == [12])
            with pytest.raises(fastwsrpc.UnknownMethodError):
                await client.other.no_such_method()


def test_every_public_name_of_the_peer_exists_here() -> None:
    wanted = {
        name
        for name in peer.__all__
        if name
        not in {
            # its internal socket plumbing: we speak JSON-RPC directly (see README, Compatibility)
            "JsonSerializingWebSocket",
            "SerializingSocketProtocol",
            "SimpleWebSocket",
            "SocketProtocol",
            "JsonRpcRequest",
            "JsonRpcResponse",
            "JsonRpcError",
            "gen_uid",
        }
    }
    missing = sorted(name for name in wanted if not hasattr(fastwsrpc, name))
    assert missing == []
