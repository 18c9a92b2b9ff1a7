"""Calls over a real uvicorn server and the real client: what only a socket shows.

Each behaviour of a call (params, errors, batches, typed params, discovery,
cancellation, the promise store) is tested on a memory pair, on both twins, in
``test_channel_calls.py``; here each keeps at most one smoke test through the
FastAPI endpoint, the ``websockets`` client and its frame coalescing, plus what
belongs to the client itself (its state before connecting and after closing)
and the endpoint's own settings.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fastwsrpc import (
    RpcChannelClosedError,
    RpcInvalidStateError,
    RpcMethodsBase,
    RpcNotConnectedError,
    RpcTimeoutError,
    RpcUtilityMethods,
    UnknownMethodError,
    WebSocketRpcClient,
)

from .app import CANCELLED, RECORDED, STARTED
from .support import ServerThread, eventually

pytestmark = pytest.mark.e2e


class ClientMethods(RpcUtilityMethods):
    async def multiply(self, x: int, y: int) -> int:
        return x * y

    async def join(self, *parts: str) -> str:
        return "-".join(parts)


async def test_named_and_positional_calls(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        assert (await client.other.add(a=1, b=2)).result == 3
        assert (await client.other.subtract(42, 23)).result == 19
        assert (await client.call("subtract", {"subtrahend": 23, "minuend": 42})).result == 19
        assert (await client.call("concat", ["hello", " world"])).result == "hello world"
        assert (await client.other.concat()).result == ""


async def test_server_calls_client_both_ways_of_passing_params(url: str) -> None:
    async with WebSocketRpcClient(url, ClientMethods()) as client:
        assert (await client.other.call_client(method="multiply", params={"x": 6, "y": 7})).result == 42
        assert (await client.other.call_client(method="join", params=["a", "b", "c"])).result == "a-b-c"


async def test_a_burst_of_notifications_is_delivered_whole(url: str) -> None:
    # The client coalesces frames; a sender that never yields must still get all
    # of them out, in order, without the queue growing without bound.
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        for i in range(3000):
            await client.notify("record", {"key": key, "value": i})
        await eventually(lambda: len(RECORDED.get(key, [])) == 3000, timeout=30)
        assert sorted(RECORDED[key]) == list(range(3000))


async def test_batch_mixed(url: str) -> None:
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        responses = await client.call_batch(
            [
                ("add", {"a": 1, "b": 2}),
                ("record", {"key": key, "value": "n"}, True),
                {"method": "subtract", "params": [10, 4]},
                ("missing", None),
            ]
        )
        assert [r.result for r in responses[:2]] == [3, 6]
        assert responses[2].error is not None and responses[2].error.code == -32601
        await eventually(lambda: RECORDED.get(key) == ["n"])
        assert await client.call_batch([("record", {"key": key, "value": "m"}, True)]) == []
        await eventually(lambda: RECORDED.get(key) == ["n", "m"])


async def test_utility_methods(url: str) -> None:
    async with WebSocketRpcClient(url, RpcUtilityMethods()) as client:
        assert (await client.other.echo(text="hi")).result == "hi"
        assert (await client.other.ping()).result == "pong"
        assert (await client.ping()).result == "pong"


async def test_thousand_concurrent_calls_on_one_connection(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        responses = await asyncio.gather(*(client.other.add(a=i, b=i) for i in range(1000)))
        assert [r.result for r in responses] == [2 * i for i in range(1000)]
        assert client.channel.pending_count == 0  # type: ignore[union-attr]


async def test_calls_before_connect_and_after_close_say_what_to_do(url: str) -> None:
    client = WebSocketRpcClient(url, RpcMethodsBase())
    with pytest.raises(RpcInvalidStateError, match="async with"):
        await client.other.add(a=1, b=2)
    async with client:
        pass
    with pytest.raises(RpcNotConnectedError) as closed:
        await client.other.add(a=1, b=2)
    assert isinstance(closed.value, RpcChannelClosedError) and isinstance(closed.value, RpcInvalidStateError)
    assert "reconnect" in str(closed.value)


async def test_close_cancels_server_side_handlers(url: str) -> None:
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        task = asyncio.ensure_future(client.other.sleep(seconds=30, key=key))
        await eventually(lambda: STARTED.get(key) == 1)  # the server's handler runs: the close must stop it
    with pytest.raises(RpcChannelClosedError):
        await task
    await eventually(lambda: CANCELLED.get(key) == 1)


async def test_discovery_can_be_switched_off(server: ServerThread) -> None:
    async with WebSocketRpcClient(server.url("/hidden"), RpcMethodsBase()) as client:
        with pytest.raises(UnknownMethodError):
            await client.call("rpc.discover")


async def test_a_timed_out_call_cancels_the_remote_handler(url: str) -> None:
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        with pytest.raises(RpcTimeoutError):
            await client.call("sleep", {"seconds": 30, "key": key}, timeout=0.2)
        await eventually(lambda: CANCELLED.get(key) == 1)
        assert client.pending_count == 0
        assert (await client.other.running()).result == 1  # only this call: nothing left behind
