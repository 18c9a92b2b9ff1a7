"""Beyond the peers: typed methods, discovery, cancellation that crosses the wire."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Dict

import pytest

from fastwsrpc import (
    RpcInvalidParamsError,
    RpcMethodsBase,
    RpcTimeoutError,
    UnknownMethodError,
    WebSocketRpcClient,
)

from .app import CANCELLED, Point, User
from .support import ServerThread, eventually


async def test_typed_params_are_converted_named_and_positional(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        items = [{"name": "a", "price": 1.5}, {"name": "b", "price": 2}]
        assert (await client.other.total(items=items)).result == 3.5
        assert (await client.other.total(items, 0.5)).result == 3.0
        assert (await client.other.where(address={"city": "Paris"})).result == "Paris"
        assert (await client.other.greet_user(user={"name": "ada", "tags": []})).result == "hi ada"


async def test_type_mismatch_names_the_parameter_and_path(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        items: Any = [{"name": str(i), "price": 1} for i in range(3)] + [{"name": "x", "price": "free"}]
        with pytest.raises(RpcInvalidParamsError) as bad:
            await client.other.total(items=items)
        assert bad.value.code == -32602
        assert bad.value.data == {
            "param": "items",
            "path": "$.items[3].price",
            "message": "Expected `float`, got `str`",
        }
        assert "$.items[3].price: Expected `float`, got `str`" in bad.value.message
        with pytest.raises(RpcInvalidParamsError) as positional:
            await client.other.make_point("one", 2)
        assert positional.value.data["path"] == "$.x" and positional.value.data["param"] == "x"
        with pytest.raises(RpcInvalidParamsError, match="missing required field `y`"):
            await client.other.make_point(x=1)
        with pytest.raises(RpcInvalidParamsError, match="unknown field `z`"):
            await client.other.make_point(x=1, y=2, z=3)
        with pytest.raises(RpcInvalidParamsError) as model:
            await client.other.greet_user(user={"name": "ada", "tags": "not-a-list"})
        assert model.value.data["param"] == "user" and model.value.data["path"].startswith("$.user.tags")


async def test_result_type_on_the_calling_side(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        assert (await client.other.make_point(x=1, y=2, result_type=Point)).result == Point(1, 2)
        user = (await client.other.user(result_type=User)).result
        assert isinstance(user, User) and user.tags == ["x", "y"]


async def test_discovery_answers_an_openrpc_document(url: str) -> None:
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        doc: Dict[str, Any] = (await client.call("rpc.discover")).result
    assert doc["openrpc"].startswith("1.") and doc["info"]["title"] == "ServerMethods"
    methods = {m["name"]: m for m in doc["methods"]}
    assert "_private" not in methods and "not_async" not in methods and "add" in methods
    total = methods["total"]
    assert total["summary"] == "Sum of the prices."
    assert [(p["name"], p["required"]) for p in total["params"]] == [("items", True), ("discount", False)]
    assert total["params"][0]["schema"]["type"] == "array"
    assert total["result"]["schema"] == {"type": "number"}


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


async def test_a_cancelled_caller_cancels_the_remote_handler(url: str) -> None:
    key = uuid.uuid4().hex
    async with WebSocketRpcClient(url, RpcMethodsBase()) as client:
        task = asyncio.ensure_future(client.other.sleep(seconds=30, key=key))
        await eventually(lambda: client.pending_count == 1)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: CANCELLED.get(key) == 1)
        assert client.pending_count == 0 and (await client.other.running()).result == 1


class SlowClient(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.cancelled = 0

    async def slow(self) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_cancellation_works_from_server_to_client(url: str) -> None:
    async with WebSocketRpcClient(url, SlowClient()) as client:
        assert (await client.other.call_client_with_timeout(method="slow", params=None, timeout=0.2)).result == (
            "timed out"
        )
        await eventually(lambda: client.channel.methods.cancelled == 1)
        await eventually(lambda: client.channel.running_count == 0)
