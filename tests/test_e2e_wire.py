"""What a plain JSON-RPC 2.0 client, in any language, sees on the wire. No fastwsrpc client here."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, AsyncIterator, List

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

pytestmark = pytest.mark.e2e


@pytest.fixture
async def ws(url: str) -> AsyncIterator[ClientConnection]:
    async with connect(url) as conn:  # no subprotocol offered, like most clients
        yield conn


async def rpc(ws: ClientConnection, payload: Any) -> Any:
    await ws.send(payload if isinstance(payload, str) else json.dumps(payload))
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def test_no_subprotocol_forced_on_a_client_that_offered_none(ws: ClientConnection) -> None:
    assert ws.subprotocol is None


async def test_jsonrpc_subprotocol_accepted_when_offered(url: str) -> None:
    async with connect(url, subprotocols=[Subprotocol("jsonrpc2.0")]) as conn:
        assert conn.subprotocol == "jsonrpc2.0"
        assert await rpc(conn, {"jsonrpc": "2.0", "method": "ping", "id": 1}) == {
            "jsonrpc": "2.0",
            "id": 1,
            "result": "pong",
        }


async def test_ids_are_echoed_with_their_type(ws: ClientConnection) -> None:
    assert (await rpc(ws, {"jsonrpc": "2.0", "method": "add", "params": {"a": 1, "b": 2}, "id": 7}))["id"] == 7
    assert (await rpc(ws, {"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": "7"}))["id"] == "7"
    answer = await rpc(ws, {"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": None})
    assert answer == {"jsonrpc": "2.0", "id": None, "result": 3}


async def test_spec_examples(ws: ClientConnection) -> None:
    # The examples of jsonrpc.org/specification, section 7, one by one.
    assert await rpc(ws, {"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}) == {
        "jsonrpc": "2.0",
        "result": 19,
        "id": 1,
    }
    assert await rpc(
        ws, {"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 4}
    ) == {"jsonrpc": "2.0", "result": 19, "id": 4}
    missing = await rpc(ws, {"jsonrpc": "2.0", "method": "foobar", "id": "1"})
    assert missing["id"] == "1" and missing["error"]["code"] == -32601
    parse = await rpc(ws, '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert parse == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
    invalid = await rpc(ws, {"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert invalid["id"] is None and invalid["error"]["code"] == -32600
    empty = await rpc(ws, "[]")
    assert isinstance(empty, dict) and empty["error"]["code"] == -32600 and empty["id"] is None
    not_batch = await rpc(ws, "[1]")
    assert isinstance(not_batch, list) and [e["error"]["code"] for e in not_batch] == [-32600]
    three = await rpc(ws, "[1,2,3]")
    assert [e["error"]["code"] for e in three] == [-32600] * 3


async def test_spec_batch_example(ws: ClientConnection) -> None:
    answer = await rpc(
        ws,
        [
            {"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": "1"},
            {"jsonrpc": "2.0", "method": "record", "params": ["wire-batch", 7]},
            {"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": "2"},
            {"foo": "boo"},
            {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
            {"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": "9"},
        ],
    )
    by_id = {item["id"]: item for item in answer if item["id"] is not None}
    assert len(answer) == 5  # the notification is not answered
    assert by_id["1"]["result"] == 3 and by_id["2"]["result"] == 19 and by_id["9"]["result"] == 3
    assert by_id["5"]["error"]["code"] == -32601
    assert [item["error"]["code"] for item in answer if item["id"] is None] == [-32600]


async def test_notifications_and_notification_batches_get_no_answer(ws: ClientConnection) -> None:
    key = f"wire-n-{uuid.uuid4().hex}"  # both servers share this process's RECORDED
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "record", "params": [key, 1]}))
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "no_such_method", "params": [1]}))
    await ws.send(json.dumps([{"jsonrpc": "2.0", "method": "record", "params": [key, 2]}]))
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "fail"}))
    # Calls are handled concurrently, so poll; but every answer that arrives must
    # be to one of these requests: nothing ever answers the notifications above.
    for attempt in range(200):
        answer = await rpc(ws, {"jsonrpc": "2.0", "method": "recorded", "params": [key], "id": attempt})
        assert answer["id"] == attempt and "error" not in answer
        if answer["result"] == [1, 2]:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the notifications never arrived")


async def test_invalid_params_and_internal_errors(ws: ClientConnection) -> None:
    bad = await rpc(ws, {"jsonrpc": "2.0", "method": "add", "params": {"a": 1}, "id": 1})
    assert bad["error"]["code"] == -32602
    extra = await rpc(ws, {"jsonrpc": "2.0", "method": "add", "params": [1, 2, 3], "id": 2})
    assert extra["error"]["code"] == -32602
    crash = await rpc(ws, {"jsonrpc": "2.0", "method": "fail", "id": 3})
    assert crash == {"jsonrpc": "2.0", "id": 3, "error": {"code": -32603, "message": "Internal error"}}
    custom = await rpc(ws, {"jsonrpc": "2.0", "method": "fail_with_code", "params": [-32050, "nope"], "id": 4})
    assert custom["error"] == {"code": -32050, "message": "nope", "data": {"hint": "custom"}}
    assert (await rpc(ws, {"jsonrpc": "2.0", "method": "add", "params": [2, 2], "id": 5}))["result"] == 4


async def test_binary_frames_are_read_too(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "add", "params": [2, 3], "id": 1}).encode())
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == 5


async def test_results_keep_their_json_types(ws: ClientConnection) -> None:
    answer = await rpc(ws, {"jsonrpc": "2.0", "method": "box", "id": 1})
    assert answer["result"] == {"width": 1.5, "height": 2.0}
    answer = await rpc(ws, {"jsonrpc": "2.0", "method": "subtract", "params": [1.5, 1], "id": 2})
    assert answer["result"] == 0.5


async def test_oversized_frame_closes_with_1009_and_server_keeps_serving(server: Any) -> None:
    async with connect(server.url("/small")) as conn:
        await conn.send(json.dumps({"jsonrpc": "2.0", "method": "echo", "params": ["x" * 5000], "id": 1}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(conn.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with connect(server.url("/small")) as conn:
        assert (await rpc(conn, {"jsonrpc": "2.0", "method": "echo", "params": ["ok"], "id": 2}))["result"] == "ok"


@pytest.mark.parametrize("frame_type", ["text", "binary"])
async def test_answers_are_the_same_with_and_without_compression(server_kind: str, frame_type: str) -> None:
    """Under uvicorn, uncompressed answers skip its send (our frames, its transport) and deflated ones
    go through it; the native server declines compression. The client sees the same answers."""
    from fastwsrpc import RpcChannel, RpcMethodsBase, WebSocketFrameType

    from .support import serve_methods

    class Methods(RpcMethodsBase):
        async def double(self, text: str) -> str:
            return text * 2

    sockets: List[Any] = []

    async def record(channel: RpcChannel) -> None:
        sockets.append(channel.socket)

    with serve_methods("fastapi", Methods(), on_connect=[record], frame_type=WebSocketFrameType(frame_type)) as server:
        for compression in (None, "deflate"):
            async with connect(server.url(), compression=compression, max_size=None) as conn:
                for size in (1, 200, 70_000):  # the three lengths of a frame header
                    await conn.send(json.dumps({"jsonrpc": "2.0", "method": "double", "params": ["é" * size], "id": 1}))
                    frame = await asyncio.wait_for(conn.recv(), 10)
                    assert isinstance(frame, str if frame_type == "text" else bytes)
                    assert json.loads(frame) == {"jsonrpc": "2.0", "id": 1, "result": "é" * size * 2}
    if server_kind == "fastapi":
        # uvicorn's sans-I/O protocol is its default from 0.35 (the releases for Python 3.9 default to another).
        sansio = type(sockets[0]._server).__name__ == "WebSocketsSansIOProtocol"
        assert [s._direct is not None for s in sockets] == [sansio, False]
