"""Calls both ways over a real uvicorn server and the real client."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, List

import pytest

from fastwsrpc import (
    RemoteValueError,
    RpcChannelClosedError,
    RpcInternalError,
    RpcInvalidParamsError,
    RpcInvalidStateError,
    RpcMethodsBase,
    RpcNotConnectedError,
    RpcTimeoutError,
    RpcUtilityMethods,
    UnknownMethodError,
    WebSocketRpcClient,
)

from .app import CANCELLED, RECORDED
from .support import eventually


class ClientMethods(RpcUtilityMethods):
    def __init__(self) -> None:
        super().__init__()
        self.notes: List[Any] = []

    async def multiply(self, x: int, y: int) -> int:
        return x * y

    async def join(self, *parts: str) -> str:
        return "-".join(parts)

    async def nested(self, depth: int) -> List[str]:
        if depth <= 0:
            return ["client"]
        assert self.channel is not None
        response = await self.channel.other.nested(depth=depth - 1)
        return ["client", *response.result]

    async def note(self, text: str) -> None:
        self.notes.append(text)


async def test_named_and_positional_calls(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        assert (await client.other.add(a=1, b=2)).result == 3
        assert (await client.other.subtract(42, 23)).result == 19
        assert (await client.call("subtract", {"subtrahend": 23, "minuend": 42})).result == 19
        assert (await client.call("concat", ["hello", " world"])).result == "hello world"
        assert (await client.other.concat()).result == ""


async def test_seed_example_concat(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        response = await client.other.concat(a="hello", b=" world")
        assert response.result == "hello world"


async def test_mixing_positional_and_named_is_refused_locally(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        with pytest.raises(TypeError, match="positional or named"):
            await client.other.add(1, b=2)


async def test_server_calls_client_both_ways_of_passing_params(url: str) -> None:
    async with WebSocketRpcClient(url, ClientMethods()) as client:
        assert (await client.other.call_client(method="multiply", params={"x": 6, "y": 7})).result == 42
        assert (await client.other.call_client(method="join", params=["a", "b", "c"])).result == "a-b-c"


async def test_notifications_reach_the_other_side_and_get_no_answer(url: str) -> None:
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        assert await client.notify("record", {"key": key, "value": 1}) is None
        await client.channel.notify("record", [key, 2])  # positional works too
        await eventually(lambda: len(RECORDED.get(key, [])) == 2)
        assert sorted(RECORDED[key]) == [1, 2]
        assert client.channel.pending_count == 0


async def test_a_burst_of_notifications_is_delivered_whole(url: str) -> None:
    # The client coalesces frames; a sender that never yields must still get all
    # of them out, in order, without the queue growing without bound.
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        for i in range(3000):
            await client.notify("record", {"key": key, "value": i})
        await eventually(lambda: len(RECORDED.get(key, [])) == 3000, timeout=30)
        assert sorted(RECORDED[key]) == list(range(3000))


async def test_server_notifies_client(url: str) -> None:
    methods = ClientMethods()
    async with WebSocketRpcClient(url, methods) as client:
        # call_me_back is the seed's helper; here the server calls client.note without waiting
        call_id = (await client.other.call_me_back(method_name="note", args={"text": "hi"})).result
        response = (await client.other.get_response(call_id=call_id)).result
        assert response["result"] is None
        assert methods.channel is None  # the instance given is a template; each connection gets a copy
        await eventually(lambda: client.channel.methods.notes == ["hi"])


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


async def test_remote_errors_raise_the_seed_exceptions(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        with pytest.raises(UnknownMethodError) as unknown:
            await client.other.does_not_exist()
        assert unknown.value.code == -32601 and "does_not_exist" in unknown.value.message
        with pytest.raises(RpcInvalidParamsError) as params:
            await client.other.add(a=1)
        assert params.value.code == -32602
        with pytest.raises(RpcInternalError) as internal:
            await client.other.fail()
        # sanitized by default: the exception text stays on the server
        assert internal.value.code == -32603 and "secret" not in internal.value.message
        with pytest.raises(RemoteValueError) as custom:
            await client.other.fail_with_code(code=-32010, message="insufficient funds")
        assert (custom.value.code, custom.value.message, custom.value.data) == (
            -32010,
            "insufficient funds",
            {"hint": "custom"},
        )
        assert custom.value.response.id is not None
        # the connection survives every one of them
        assert (await client.other.add(a=2, b=2)).result == 4


async def test_private_and_sync_methods_are_not_exposed(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        for name in ("_private", "not_async", "__init__", "_copy_", "channel"):
            with pytest.raises(UnknownMethodError):
                await client.call(name)


async def test_structured_results(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        assert (await client.other.user()).result == {"name": "ada", "tags": ["x", "y"]}
        assert (await client.other.point()).result == {"x": 1, "y": 2}
        assert (await client.other.box()).result == {"width": 1.5, "height": 2.0}
        assert (await client.other.nothing()).result is None
        details = (await client.other.get_process_details()).result
        assert isinstance(details["pid"], int) and isinstance(details["cmd"], list)
        with pytest.raises(RpcInternalError, match="could not be encoded"):
            await client.other.unencodable()


async def test_utility_methods(url: str) -> None:
    async with WebSocketRpcClient(url, RpcUtilityMethods()) as client:
        assert (await client.other.echo(text="hi")).result == "hi"
        assert (await client.other.ping()).result == "pong"
        assert (await client.ping()).result == "pong"


async def test_thousand_concurrent_calls_on_one_connection(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        responses = await asyncio.gather(*(client.other.add(a=i, b=i) for i in range(1000)))
        assert [r.result for r in responses] == [2 * i for i in range(1000)]
        assert client.channel.pending_count == 0


async def test_recursive_calls_across_the_wire(url: str) -> None:
    async with WebSocketRpcClient(url, ClientMethods()) as client:
        response = await client.other.nested(depth=5)
        assert response.result == ["server", "client", "server", "client", "server", "client"]


async def test_timeout_cleans_up_and_is_an_asyncio_timeout(url: str) -> None:
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase(), default_response_timeout=0.2) as client:
        with pytest.raises(RpcTimeoutError):
            await client.other.sleep(seconds=30, key=key)
        with pytest.raises(asyncio.TimeoutError):
            await client.call("sleep", {"seconds": 30}, timeout=0.1)
        assert client.channel.pending_count == 0
        assert (await client.call("add", [1, 1], timeout=None)).result == 2


async def test_no_response_methods_leave_the_call_to_its_timeout(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        with pytest.raises(RpcTimeoutError):
            await client.call("silent", timeout=0.2)


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
        await asyncio.sleep(0.1)
    with pytest.raises(RpcChannelClosedError):
        await task
    await eventually(lambda: CANCELLED.get(key) == 1)
