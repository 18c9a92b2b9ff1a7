"""The sans-I/O core: frames in, typed messages out, on both twins. No event loop."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import fastwsrpc
from fastwsrpc import RpcMessageTooLargeError
from fastwsrpc.protocol import (
    MAX_ID_LENGTH,
    Batch,
    ErrorObject,
    Invalid,
    Notification,
    Request,
    Response,
    encode_batch,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
)

LIMIT = 10 * 1024 * 1024


def test_live_implementation_is_the_one_asked_for() -> None:
    import os

    if os.environ.get("FASTWSRPC_NO_EXTENSIONS"):
        assert fastwsrpc.IMPLEMENTATION == "python"
    elif os.environ.get("FASTWSRPC_REQUIRE_EXTENSIONS"):
        assert fastwsrpc.IMPLEMENTATION == "cython"
    assert fastwsrpc.decode is fastwsrpc._accel.impl.decode


@pytest.mark.parametrize("frame_type", [str, bytes])
def test_request_named_params(speedups: Any, frame_type: type) -> None:
    frame = '{"jsonrpc":"2.0","method":"add","params":{"a":1,"b":2},"id":7}'
    data = frame if frame_type is str else frame.encode()
    assert speedups.decode(data, LIMIT) == Request("add", {"a": 1, "b": 2}, 7)


def test_request_positional_and_absent_params(speedups: Any) -> None:
    assert speedups.decode(b'{"jsonrpc":"2.0","method":"s","params":[42,23],"id":"x"}', LIMIT) == Request(
        "s", [42, 23], "x"
    )
    assert speedups.decode(b'{"jsonrpc":"2.0","method":"s","id":1}', LIMIT) == Request("s", None, 1)
    # Lenient: "params": null reads as no params.
    assert speedups.decode(b'{"jsonrpc":"2.0","method":"s","params":null,"id":1}', LIMIT) == Request("s", None, 1)


def test_null_id_is_a_request_not_a_notification(speedups: Any) -> None:
    assert speedups.decode(b'{"jsonrpc":"2.0","method":"s","id":null}', LIMIT) == Request("s", None, None)


def test_notification(speedups: Any) -> None:
    assert speedups.decode(b'{"jsonrpc":"2.0","method":"log","params":[1]}', LIMIT) == Notification("log", [1])


def test_responses(speedups: Any) -> None:
    assert speedups.decode(b'{"jsonrpc":"2.0","result":19,"id":1}', LIMIT) == Response(1, 19, None)
    assert speedups.decode(b'{"jsonrpc":"2.0","result":null,"id":"a"}', LIMIT) == Response("a", None, None)
    err = speedups.decode(
        b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found","data":[1]},"id":"1"}', LIMIT
    )
    assert err == Response("1", None, ErrorObject(-32601, "Method not found", [1]))
    # fastapi-ws-rpc omits "result" when a method returns None: read as null.
    assert speedups.decode(b'{"jsonrpc":"2.0","id":3}', LIMIT) == Response(3, None, None)


def test_malformed_responses_become_errors_for_the_caller(speedups: Any) -> None:
    both = speedups.decode(b'{"jsonrpc":"2.0","result":1,"error":{"code":1,"message":"m"},"id":4}', LIMIT)
    assert both.id == 4 and both.error.code == -32603 and "both" in both.error.message
    bad = speedups.decode(b'{"jsonrpc":"2.0","error":"oops","id":5}', LIMIT)
    assert bad == Response(5, None, ErrorObject(-32603, "Invalid response: malformed error", "oops"))


@pytest.mark.parametrize(
    ("frame", "code", "id_"),
    [
        (b'{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]', -32700, None),
        (b"", -32700, None),
        (b"\xff\xfe", -32700, None),
        (b"[]", -32600, None),
        (b"1", -32600, None),
        (b'"text"', -32600, None),
        (b'{"jsonrpc":"2.0","method":1,"params":"bar"}', -32600, None),
        (b'{"jsonrpc":"2.0","method":"m","params":"bar","id":9}', -32600, 9),
        (b'{"jsonrpc":"1.0","method":"m","id":9}', -32600, 9),
        (b'{"method":"m","id":"k"}', -32600, "k"),
        (b'{"jsonrpc":"2.0","method":"m","id":1.5}', -32600, None),
        (b'{"jsonrpc":"2.0","method":"m","id":true}', -32600, None),
        (b'{"jsonrpc":"2.0","method":"m","id":{"a":1}}', -32600, None),
        (b'{"jsonrpc":"2.0"}', -32600, None),
    ],
)
def test_invalid_frames_are_answered_with_standard_errors(speedups: Any, frame: bytes, code: int, id_: Any) -> None:
    msg = speedups.decode(frame, LIMIT)
    assert type(msg) is Invalid
    assert (msg.code, msg.id) == (code, id_)
    assert msg.message.startswith("Parse error" if code == -32700 else "Invalid Request")


def test_id_length_is_bounded(speedups: Any) -> None:
    ok = "a" * MAX_ID_LENGTH
    assert speedups.decode(f'{{"jsonrpc":"2.0","method":"m","id":"{ok}"}}', LIMIT).id == ok
    too_long = speedups.decode(f'{{"jsonrpc":"2.0","method":"m","id":"{ok}a"}}', LIMIT)
    assert type(too_long) is Invalid and too_long.id is None and "longer" in too_long.message


def test_batch_items_are_classified_one_by_one(speedups: Any) -> None:
    frame = (
        b'[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},'
        b'{"jsonrpc":"2.0","method":"notify_hello","params":[7]},'
        b'{"foo":"boo"},1,'
        b'{"jsonrpc":"2.0","result":5,"id":2}]'
    )
    msg = speedups.decode(frame, LIMIT)
    assert type(msg) is Batch
    assert msg.items[0] == Request("sum", [1, 2, 4], "1")
    assert msg.items[1] == Notification("notify_hello", [7])
    assert type(msg.items[2]) is Invalid and msg.items[2].code == -32600
    assert type(msg.items[3]) is Invalid and msg.items[3].code == -32600
    assert msg.items[4] == Response(2, 5, None)


def test_size_is_checked_before_parsing(speedups: Any) -> None:
    # Not even valid JSON: an oversized frame must be refused without a parse.
    with pytest.raises(RpcMessageTooLargeError, match="exceeds max_message_size of 100 bytes"):
        speedups.decode(b"{" * 101, 100)
    assert type(speedups.decode(b"{" * 100, 100)) is Invalid  # at the limit: parsed (and refused)


def test_size_counts_utf8_bytes_not_characters(speedups: Any) -> None:
    text = '"' + "\u00e9" * 40 + '"'  # 42 characters, 82 bytes
    assert speedups.frame_size(text) == 82
    with pytest.raises(RpcMessageTooLargeError):
        speedups.decode(text, 81)
    assert type(speedups.decode(text, 82)) is Invalid  # a bare string is not a request


def test_encoders_write_standard_json_rpc() -> None:
    dec = msgspec.json.decode
    assert dec(encode_request(7, "add", {"a": 1})) == {
        "jsonrpc": "2.0",
        "method": "add",
        "params": {"a": 1},
        "id": 7,
    }
    assert dec(encode_request("x", "ping")) == {"jsonrpc": "2.0", "method": "ping", "id": "x"}
    assert dec(encode_notification("log", [1])) == {"jsonrpc": "2.0", "method": "log", "params": [1]}
    assert dec(encode_result(1, None)) == {"jsonrpc": "2.0", "id": 1, "result": None}
    assert dec(encode_error(None, -32700, "Parse error")) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "Parse error"},
    }
    assert dec(encode_error(2, -32000, "x", {"k": 1}))["error"]["data"] == {"k": 1}
    assert dec(encode_batch([encode_result(1, 1), encode_result(2, 2)])) == [
        {"jsonrpc": "2.0", "id": 1, "result": 1},
        {"jsonrpc": "2.0", "id": 2, "result": 2},
    ]


def test_response_has_the_fields_users_read() -> None:
    response = Response(1, {"a": 1})
    assert (response.result, response.error, response.id, response.jsonrpc) == ({"a": 1}, None, 1, "2.0")
