"""fastapi-ws-rpc 1.2 parity switches (issue 16): failed responses instead of exceptions, and awaited on_connect."""

from __future__ import annotations

from typing import Any, List

import pytest
from fastapi import FastAPI

from fastwsrpc import (
    RemoteValueError,
    RpcChannel,
    RpcMethodsBase,
    RpcSettings,
    WebSocketRpcClient,
    WebSocketRpcEndpoint,
)
from fastwsrpc.testing import channel_pair

from .support import ServerThread


class Methods(RpcMethodsBase):
    async def fail(self) -> None:
        raise RemoteValueError("nope", code=-32050, data={"why": "test"})

    async def add(self, a: int, b: int) -> int:
        return a + b


async def test_raise_on_error_false_returns_the_failed_response(speedups: Any) -> None:
    lenient = RpcSettings(raise_on_error=False)
    async with channel_pair(Methods(), Methods(), speedups=speedups, client_settings=lenient) as (server, client):
        response = await client.other.fail()
        assert response.error is not None and response.error.code == -32050 and response.error.data == {"why": "test"}
        assert (await client.other.add(a=1, b=2)).result == 3
        with pytest.raises(RemoteValueError):  # the default side still raises
            await server.other.fail()


@pytest.mark.e2e
async def test_await_connect_callbacks_runs_them_before_the_body() -> None:
    app = FastAPI()
    WebSocketRpcEndpoint(Methods()).register_route(app, "/ws")
    order: List[str] = []

    async def on_connect(channel: RpcChannel) -> None:
        # A callback may call the server: the read loop runs meanwhile.
        order.append(f"callback {(await channel.other.add(a=2, b=3)).result}")

    with ServerThread(app) as srv:
        async with WebSocketRpcClient(srv.url(), on_connect=[on_connect], await_connect_callbacks=True) as client:
            order.append("body")
            assert (await client.other.add(a=1, b=1)).result == 2
        assert order == ["callback 5", "body"]
        lenient = WebSocketRpcClient(srv.url(), raise_on_error=False)
        async with lenient:
            assert (await lenient.other.fail()).error is not None
        endpoint = WebSocketRpcEndpoint(raise_on_error=False)
        assert endpoint.settings.raise_on_error is False


async def test_get_channel_id_is_answered_as_in_fastapi_ws_rpc(speedups: Any) -> None:
    async with channel_pair(Methods(), Methods(), speedups=speedups) as (server, client):
        assert (await client.other._get_channel_id_()).result == server.id


def test_a_refused_handshake_is_also_websockets_invalid_status() -> None:
    from websockets.exceptions import InvalidStatus

    from fastwsrpc import RpcConnectionError, RpcHandshakeRejectedError

    refused = RpcHandshakeRejectedError(403, "forbidden")
    assert isinstance(refused, InvalidStatus) and isinstance(refused, RpcConnectionError)
    assert refused.status == 403 and str(refused) == "forbidden"
