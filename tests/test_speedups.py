"""The two twins of the hot path: same results, same exceptions, on the same inputs."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastwsrpc import RpcBackpressureError, RpcMessageTooLargeError, RpcTimeoutError
from fastwsrpc import _speedups_py as py

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Objects shaped like JSON-RPC messages, right and wrong, so that every branch is hit.
message_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2, None]),
        "method": st.one_of(st.text(max_size=10), st.integers()),
        "params": json_values,
        "id": st.one_of(st.integers(), st.text(max_size=300), st.none(), st.floats(allow_nan=False), st.booleans()),
        "result": json_values,
        "error": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"code": st.one_of(st.integers(), st.text(max_size=3))},
                optional={"message": st.one_of(st.text(max_size=10), st.integers()), "data": json_values},
            ),
        ),
    },
)
frames = st.one_of(message_like, st.lists(st.one_of(message_like, json_values), max_size=5), json_values)


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # compared by type and message
        return ("raised", type(exc), str(exc))


@settings(max_examples=400, deadline=None)
@given(frames)
def test_classify_agrees(compiled: Any, obj: Any) -> None:
    assert outcome(compiled.classify, obj) == outcome(py.classify, obj)


@settings(max_examples=300, deadline=None)
@given(frames, st.integers(min_value=1, max_value=400))
def test_decode_agrees_on_encoded_frames(compiled: Any, obj: Any, limit: int) -> None:
    raw = msgspec.json.encode(obj)
    assert outcome(compiled.decode, raw, limit) == outcome(py.decode, raw, limit)
    text = raw.decode()
    assert outcome(compiled.decode, text, limit) == outcome(py.decode, text, limit)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64), st.integers(min_value=1, max_value=80))
def test_decode_agrees_on_garbage(compiled: Any, frame: Any, limit: int) -> None:
    assert outcome(compiled.decode, frame, limit) == outcome(py.decode, frame, limit)


def test_size_check_is_the_same_error(compiled: Any) -> None:
    for impl in (compiled, py):
        with pytest.raises(RpcMessageTooLargeError, match="message of 11 bytes exceeds max_message_size of 10"):
            impl.check_size(b"x" * 11, 10)


# --------------------------------------------------------------- pending table
async def test_table_resolves_by_id_and_keeps_nothing(speedups: Any) -> None:
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(10)
    ids = [table.next_id() for _ in range(3)]
    assert ids == [1, 2, 3]
    futures = [loop.create_future() for _ in ids]
    for call_id, future in zip(ids, futures):
        table.add(call_id, future, float("inf"))
    assert len(table) == 3 and 2 in table
    assert table.resolve(2, "two") is True
    assert futures[1].result() == "two"
    assert table.resolve(2, "again") is False  # gone once resolved
    assert 2 not in table and len(table) == 2
    assert table.resolve(99, "nobody") is False


async def test_table_register_allocates_ids(speedups: Any) -> None:
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(2)
    first, second = loop.create_future(), loop.create_future()
    assert table.register(first) == 1
    assert table.register(second, 5.0) == 2
    with pytest.raises(RpcBackpressureError):
        table.register(loop.create_future())
    assert table.expire(4.0) == [] and table.expire(5.0) == [2]  # only 2 had a deadline
    assert table.resolve(1, "one") and first.result() == "one"
    assert len(table) == 0 and table.next_id() == 3


async def test_table_string_ids_and_duplicates(speedups: Any) -> None:
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(10)
    table.add("abc", loop.create_future(), 0.0)
    with pytest.raises(ValueError, match="already pending"):
        table.add("abc", loop.create_future(), 0.0)


async def test_table_backpressure(speedups: Any) -> None:
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(2)
    table.add(1, loop.create_future(), 1.0)
    table.add(2, loop.create_future(), 1.0)
    with pytest.raises(RpcBackpressureError, match="2 calls are pending, the limit is 2"):
        table.add(3, loop.create_future(), 1.0)
    assert table.discard(1) is True and table.discard(1) is False
    table.add(3, loop.create_future(), 1.0)  # room again


async def test_table_fail_fail_all_and_expire(speedups: Any) -> None:
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(10)
    f1, f2, f3, f4 = (loop.create_future() for _ in range(4))
    table.add(1, f1, 5.0)
    table.add(2, f2, 10.0)
    table.add(3, f3, float("inf"))
    table.add(4, f4, 1.0)
    assert table.fail(4, KeyError("x")) is True
    assert isinstance(f4.exception(), KeyError)
    assert table.expire(7.0) == [1]
    assert isinstance(f1.exception(), RpcTimeoutError)
    assert table.fail_all(lambda: ConnectionError("gone")) == 2
    assert isinstance(f2.exception(), ConnectionError) and isinstance(f3.exception(), ConnectionError)
    assert f2.exception() is not f3.exception()  # one exception per waiter
    assert len(table) == 0


async def test_table_tolerates_cancelled_waiters(speedups: Any) -> None:
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(10)
    future = loop.create_future()
    table.add(1, future, 1.0)
    future.cancel()
    assert table.resolve(1, "late") is True  # no InvalidStateError
    table.add(2, future, 1.0)
    assert table.fail(2, KeyError()) is True


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=50))
def test_frame_size_agrees_on_any_text(compiled: Any, text: str) -> None:
    # surrogates included: the pure twin counts them as "surrogatepass" would encode them
    assert compiled.frame_size(text) == py.frame_size(text) == len(text.encode("utf-8", "surrogatepass"))
