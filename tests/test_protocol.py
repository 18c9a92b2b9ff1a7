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
    assert fastwsrpc._accel.decode is fastwsrpc._accel.impl.decode
    assert fastwsrpc.decode is fastwsrpc._accel.decode  # importable from the package, outside __all__


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
        (b'{"jsonrpc":"1.0","method":"m","id":1.5}', -32600, 1.5),
        (b'{"jsonrpc":"2.0","method":"m","id":true}', -32600, None),
        (b'{"jsonrpc":"2.0","method":"m","id":false}', -32600, None),
        (b'{"jsonrpc":"2.0","method":"m","id":[1]}', -32600, None),
        (b'{"jsonrpc":"2.0","method":"m","id":1}x', -32700, None),
        (b'"\xff"', -32700, None),
        (b"1e999", -32700, None),
        (b"9" * 5000, -32700, None),
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


def test_fractional_ids_are_echoed_as_they_came(speedups: Any) -> None:
    # JSON-RPC 2.0 discourages fractional ids but does not forbid them.
    req = speedups.decode(b'{"jsonrpc":"2.0","method":"m","id":1.5}', LIMIT)
    assert req == Request("m", None, 1.5) and type(req.id) is float
    assert speedups.decode(b'{"jsonrpc":"2.0","method":"m","id":-0.25}', LIMIT) == Request("m", None, -0.25)
    one = speedups.decode(b'{"jsonrpc":"2.0","method":"m","id":1.0}', LIMIT)
    assert type(one.id) is float  # stays a float, so it is echoed as 1.0
    assert speedups.decode(b'{"jsonrpc":"2.0","result":3,"id":2.5}', LIMIT) == Response(2.5, 3, None)
    err = speedups.decode(b'{"jsonrpc":"2.0","error":{"code":1,"message":"m"},"id":1e300}', LIMIT)
    assert err == Response(1e300, None, ErrorObject(1, "m", None))
    assert speedups.decode(b'{"jsonrpc":"2.0","id":7.5}', LIMIT) == Response(7.5, None, None)
    bad = speedups.decode(b'{"jsonrpc":"2.0","method":1,"id":0.5}', LIMIT)
    assert bad == Invalid(0.5, -32600, "Invalid Request: method must be a string")
    batch = speedups.decode(b'[{"jsonrpc":"2.0","method":"m","id":0.5},{"jsonrpc":"2.0","method":"m"}]', LIMIT)
    assert batch == Batch([Request("m", None, 0.5), Notification("m", None)])
    assert msgspec.json.decode(encode_result(req.id, None))["id"] == 1.5
    assert b'"id":1.0' in encode_result(one.id, None)


@pytest.mark.parametrize("bad_id", [True, False, float("nan"), float("inf"), -float("inf"), [1], {"a": 1}, b"x"])
def test_booleans_and_non_finite_numbers_are_not_ids(speedups: Any, bad_id: Any) -> None:
    # classify takes Python objects, so it can meet what JSON cannot carry.
    msg = speedups.classify({"jsonrpc": "2.0", "method": "m", "id": bad_id})
    assert msg == Invalid(None, -32600, "Invalid Request: id must be a string, a number or null")


# ------------------------------------------------------------------ depth
def nested(depth: int, frame_type: type = bytes) -> Any:
    text = "[" * depth + "]" * depth
    return text if frame_type is str else text.encode()


def too_deep(limit: int) -> Invalid:
    return Invalid(None, -32700, f"Parse error: nested deeper than {limit} levels")


def test_default_max_depth(speedups: Any) -> None:
    assert speedups.DEFAULT_MAX_DEPTH == fastwsrpc._accel.DEFAULT_MAX_DEPTH == 128


@pytest.mark.parametrize("frame_type", [str, bytes])
def test_nesting_up_to_the_limit_parses_and_one_more_is_refused(speedups: Any, frame_type: type) -> None:
    assert type(speedups.decode(nested(128, frame_type), LIMIT)) is Batch
    assert speedups.decode(nested(129, frame_type), LIMIT) == too_deep(128)
    objects = '{"a":' * 129 + "1" + "}" * 129
    data = objects if frame_type is str else objects.encode()
    assert speedups.decode(data, LIMIT) == too_deep(128)
    mixed = '{"jsonrpc":"2.0","method":"m","params":' + '[{"k":' * 64 + "0" + "}]" * 64 + ',"id":1}'
    data = mixed if frame_type is str else mixed.encode()
    assert speedups.decode(data, LIMIT) == too_deep(128)  # 1 + 128 levels
    assert type(speedups.decode(data, LIMIT, 129)) is Request


def test_max_depth_is_a_parameter(speedups: Any) -> None:
    frame = b'{"jsonrpc":"2.0","method":"m","params":[[1]],"id":1}'
    assert speedups.decode(frame, LIMIT, 3) == Request("m", [[1]], 1)
    assert speedups.decode(frame, LIMIT, max_depth=2) == too_deep(2)
    assert speedups.decode(b"1", LIMIT, 0) == Invalid(None, -32600, "Invalid Request: expected an object or an array")
    assert speedups.decode(b"[]", LIMIT, 0) == too_deep(0)
    assert speedups.decode(b"[]", LIMIT, -5) == too_deep(0)  # a negative limit counts as 0


@pytest.mark.parametrize("frame_type", [str, bytes])
@pytest.mark.parametrize("depth", [970, 5_000, 200_000])
def test_deep_frames_are_refused_never_raised(speedups: Any, frame_type: type, depth: int) -> None:
    # ~970 levels used to make msgspec raise RecursionError straight out of decode.
    assert speedups.decode(nested(depth, frame_type), LIMIT) == too_deep(128)
    half_open = nested(depth, frame_type)[:depth]  # never closed: refused all the same
    assert speedups.decode(half_open, LIMIT) == too_deep(128)


def test_parser_recursion_is_a_parse_error(speedups: Any) -> None:
    # With the limit raised past what the parser can recurse into, the
    # RecursionError is caught like any other parse failure.
    assert speedups.decode(nested(200_000), LIMIT, 10**9) == Invalid(None, -32700, "Parse error")


def test_depth_is_judged_before_parsing(speedups: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Malformed after the deep part: the parser would have said plain "Parse error".
    assert speedups.decode(b"[" * 129 + b"garbage", LIMIT) == too_deep(128)
    if speedups is fastwsrpc._speedups_py:

        def parser(frame: Any) -> Any:
            raise AssertionError("the JSON parser was called on a frame nested too deep")

        monkeypatch.setattr(speedups, "_json_decode", parser)
        assert speedups.decode(nested(129), LIMIT) == too_deep(128)


@pytest.mark.parametrize("frame_type", [str, bytes])
def test_brackets_inside_strings_do_not_nest(speedups: Any, frame_type: type) -> None:
    for inside in [
        "[" * 300,
        "]" * 300 + "{" * 300,
        '\\"' + "[" * 300,  # an escaped quote does not end the string
        "\\\\" + "[" * 300,  # an escaped backslash is one character
    ]:
        text = '{"jsonrpc":"2.0","method":"m","params":["' + inside + '"],"id":1}'
        data = text if frame_type is str else text.encode()
        assert type(speedups.decode(data, LIMIT)) is Request, inside[:10]
    # An escaped backslash right before the quote: the string ends there.
    text = '{"jsonrpc":"2.0","method":"m","params":["\\\\",' + "[" * 130 + "]" * 130 + '],"id":1}'
    data = text if frame_type is str else text.encode()
    assert speedups.decode(data, LIMIT) == too_deep(128)
    assert type(speedups.decode(data, LIMIT, 200)) is Request


@pytest.mark.parametrize(
    "frame",
    [
        b'"\xff"',  # UnicodeDecodeError inside msgspec
        '"\ud800"',  # a lone surrogate in text: UnicodeEncodeError
        b"1e999",  # number out of range
        b"-" + b"9" * 5000,  # integer out of range
        b'{"jsonrpc":"2.0",',
        bytearray(b"{"),
        memoryview(b"[1,"),
    ],
)
def test_every_parse_failure_is_a_parse_error(speedups: Any, frame: Any) -> None:
    assert speedups.decode(frame, LIMIT) == Invalid(None, -32700, "Parse error")


def test_bytes_like_frames_are_read_like_bytes(speedups: Any) -> None:
    frame = b'{"jsonrpc":"2.0","method":"m","id":1}'
    assert (
        speedups.decode(bytearray(frame), LIMIT) == speedups.decode(memoryview(frame), LIMIT) == Request("m", None, 1)
    )
    assert speedups.decode(memoryview(nested(129)), LIMIT) == too_deep(128)


def test_size_is_checked_before_parsing(speedups: Any) -> None:
    # Not even valid JSON: an oversized frame must be refused without a parse.
    with pytest.raises(RpcMessageTooLargeError, match="exceeds max_message_size of 100 bytes"):
        speedups.decode(b"{" * 101, 100)
    assert type(speedups.decode(b"{" * 100, 100)) is Invalid  # at the limit: parsed (and refused)
    with pytest.raises(RpcMessageTooLargeError):  # size first, then depth
        speedups.decode(b"[" * 1000, 100)


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
