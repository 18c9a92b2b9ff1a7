"""The two twins of the hot path: same results, same exceptions, on the same inputs."""

from __future__ import annotations

import asyncio
from typing import Any, List

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastwsrpc import RpcBackpressureError, RpcMessageTooLargeError, RpcTimeoutError
from fastwsrpc import _speedups_py as py
from fastwsrpc.protocol import Invalid

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
LIMIT = 10 * 1024 * 1024


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


# ---------------------------------------------------------------- nesting depth
def reference_too_deep(frame: Any, max_depth: int) -> bool:
    """The depth rule written the slow, obvious way: what both twins must compute.

    A backslash escapes the next unit, inside strings and out; an unterminated
    string runs to the end; closers are not floored at zero. Bytes are read one
    byte per unit (none of the characters that matter occur inside UTF-8).
    """
    units = frame if isinstance(frame, str) else bytes(frame).decode("latin-1")
    depth, i, in_string = 0, 0, False
    while i < len(units):
        c = units[i]
        if c == "\\":
            i += 2
            continue
        if in_string:
            in_string = c != '"'
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif c in "]}":
            depth -= 1
        i += 1
    return False


def refused_as_too_deep(result: Any) -> bool:
    return result[0] == "ok" and type(result[1]) is Invalid and "nested deeper" in result[1].message


def nesting(obj: Any) -> int:
    if type(obj) is dict:
        obj = list(obj.values())
    if type(obj) is list:
        return 1 + max((nesting(item) for item in obj), default=0)
    return 0


# Everything the depth scan looks at, plus multi-byte characters and a lone surrogate.
bracket_soup = st.text(alphabet='[]{}"\\ a1,:\u00e9\u20ac\U0001f600\ud800', max_size=80)
tricky_text = st.text(alphabet='[]{}"\\ab', max_size=8) | st.text(max_size=10)
deep_values = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=250, deadline=None)
@given(bracket_soup, st.integers(min_value=-2, max_value=12))
def test_depth_rule_agrees_on_bracket_soup(compiled: Any, text: str, max_depth: int) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    expected = reference_too_deep(text, max(max_depth, 0))
    assert reference_too_deep(raw, max(max_depth, 0)) == expected  # text and its UTF-8 read alike
    for frame in (text, raw):
        got = outcome(py.decode, frame, LIMIT, max_depth)
        assert outcome(compiled.decode, frame, LIMIT, max_depth) == got
        assert refused_as_too_deep(got) == expected
        assert got[0] == "ok"  # malformed or not, never an exception


@settings(max_examples=200, deadline=None)
@given(deep_values, st.integers(min_value=0, max_value=8))
def test_depth_rule_is_the_real_nesting_of_valid_json(compiled: Any, obj: Any, max_depth: int) -> None:
    raw = msgspec.json.encode(obj)
    for frame in (raw, raw.decode()):
        got = outcome(py.decode, frame, LIMIT, max_depth)
        assert outcome(compiled.decode, frame, LIMIT, max_depth) == got
        assert refused_as_too_deep(got) == (nesting(obj) > max_depth)


# Frames past the pure twin's small-frame shortcut, with more openers than the
# limit, nesting near it, and soup in strings and between values.
soup_alphabet = '[]{}"\\ a\u00e9'
# Long pieces too: the compiled twin hands strings over 16 units to memchr.
soup_piece = st.text(alphabet=soup_alphabet, max_size=12) | st.text(alphabet=soup_alphabet, min_size=17, max_size=120)
large_parts = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 24), soup_piece).map(lambda p: "[" * p[0] + '"' + p[1] + '"' + "]" * p[0]),
        st.tuples(st.integers(0, 6), soup_piece).map(lambda p: '{"k":' * p[0] + "1" + "}" * p[0]),
        soup_piece,
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=120, deadline=None)
@given(large_parts, st.integers(min_value=0, max_value=30), st.sampled_from([0, 1000, 2100]))
def test_depth_rule_agrees_on_large_frames(compiled: Any, parts: List[str], max_depth: int, pad: int) -> None:
    text = '["' + "x" * pad + '",' + ",".join(parts) + "]"
    expected = reference_too_deep(text, max_depth)
    for frame in (text, text.encode()):
        got = outcome(py.decode, frame, LIMIT, max_depth)
        assert outcome(compiled.decode, frame, LIMIT, max_depth) == got
        assert refused_as_too_deep(got) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(deep_values, min_size=30, max_size=80), st.integers(min_value=0, max_value=10))
def test_depth_rule_is_the_real_nesting_of_large_valid_json(compiled: Any, items: List[Any], max_depth: int) -> None:
    raw = msgspec.json.encode(items)
    for frame in (raw, raw.decode()):
        got = outcome(py.decode, frame, LIMIT, max_depth)
        assert outcome(compiled.decode, frame, LIMIT, max_depth) == got
        assert refused_as_too_deep(got) == (nesting(items) > max_depth)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300), st.integers(min_value=1, max_value=400), st.integers(0, 200))
def test_decode_raises_only_for_size(compiled: Any, frame: Any, limit: int, max_depth: int) -> None:
    got = outcome(py.decode, frame, limit, max_depth)
    assert outcome(compiled.decode, frame, limit, max_depth) == got
    assert got[0] == "ok" or got[1] is RpcMessageTooLargeError


# ------------------------------------------------- pending table, differential
class BadHash:
    """Hashing fails with something other than TypeError: both twins let it through."""

    def __hash__(self) -> int:
        raise ValueError("no hash for you")

    def __repr__(self) -> str:
        return "BadHash()"


class CollidesWithOne:
    """Hashes like 1 and refuses to be compared: the dict's own error, in both twins."""

    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparison")

    def __repr__(self) -> str:
        return "CollidesWithOne()"


ODD_IDS: List[Any] = [
    [1],
    [],
    {"a": 1},
    {},
    {1, 2},
    bytearray(b"x"),
    1.5,
    1.0,
    -0.0,
    float("nan"),
    float("inf"),
    True,
    False,
    None,
    2**64,
    -(2**200),
    10**400,
    "x" * 10_000,
    "",
    (1, [2]),  # a tuple holding a list cannot be hashed either
    (1, 2),
    b"bytes",
    BadHash(),
    CollidesWithOne(),
]
odd_ids = st.integers(0, len(ODD_IDS) - 1).map(ODD_IDS.__getitem__)  # sampled_from would repr 10 kB
ids = st.one_of(st.integers(min_value=-2, max_value=4), st.text(max_size=2), odd_ids)
deadlines = st.one_of(st.just(float("inf")), st.floats(min_value=0, max_value=10), st.integers(0, 10))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), ids, deadlines),
        st.tuples(st.just("register"), deadlines),
        st.tuples(st.just("resolve"), ids),
        st.tuples(st.just("fail"), ids),
        st.tuples(st.just("discard"), ids),
        st.tuples(st.just("contains"), ids),
        st.tuples(st.just("len")),
        st.tuples(st.just("next_id")),
        st.tuples(st.just("expire"), st.floats(min_value=-1, max_value=11)),
        st.tuples(st.just("cancel"), st.integers(0, 40)),
        st.tuples(st.just("fail_all")),
    ),
    max_size=30,
)


def run_table(impl: Any, max_pending: int, ops: List[Any]) -> List[Any]:
    """Play ``ops`` on a fresh table; every result, exception and waiter state, in order."""
    loop = asyncio.new_event_loop()
    try:
        table = impl.PendingTable(max_pending)
        futures: List[Any] = []
        trace: List[Any] = []

        def new_future() -> Any:
            futures.append(loop.create_future())
            return futures[-1]

        for op in ops:
            name, args = op[0], op[1:]
            if name == "add":
                trace.append(outcome(table.add, args[0], new_future(), args[1]))
            elif name == "register":
                trace.append(outcome(table.register, new_future(), args[0]))
            elif name == "resolve":
                trace.append(outcome(table.resolve, args[0], "answer"))
            elif name == "fail":
                trace.append(outcome(table.fail, args[0], KeyError("failed")))
            elif name == "discard":
                trace.append(outcome(table.discard, args[0]))
            elif name == "contains":
                trace.append(outcome(table.__contains__, args[0]))
            elif name == "len":
                trace.append(len(table))
            elif name == "next_id":
                trace.append(table.next_id())
            elif name == "expire":
                trace.append(outcome(table.expire, args[0]))
            elif name == "cancel":
                if futures:
                    futures[args[0] % len(futures)].cancel()
            else:
                trace.append(outcome(table.fail_all, lambda: ConnectionError("gone")))
        for future in futures:
            if future.cancelled():
                trace.append("cancelled")
            elif not future.done():
                trace.append("pending")
            elif future.exception() is not None:
                trace.append((type(future.exception()), str(future.exception())))
            else:
                trace.append(("result", future.result()))
        return trace
    finally:
        loop.close()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=5), operations)
def test_tables_agree_on_any_sequence(compiled: Any, max_pending: int, ops: List[Any]) -> None:
    assert run_table(compiled, max_pending, ops) == run_table(py, max_pending, ops)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...{len(text)}"


@pytest.mark.parametrize("odd", ODD_IDS, ids=short_repr)
def test_tables_agree_on_odd_ids(compiled: Any, odd: Any) -> None:
    script = [
        ("contains", odd),
        ("resolve", odd),
        ("fail", odd),
        ("discard", odd),
        ("add", 1, 5.0),
        ("add", "k", float("inf")),
        ("contains", odd),
        ("resolve", odd),
        ("fail", odd),
        ("discard", odd),
        ("add", odd, 3.0),
        ("contains", odd),
        ("len",),
        ("expire", 4.0),
        ("resolve", odd),
        ("fail_all",),
    ]
    assert run_table(compiled, 10, script) == run_table(py, 10, script)


@pytest.mark.parametrize("unhashable", [[1], {"a": 1}, {1}, (1, [2]), bytearray(b"x")], ids=short_repr)
async def test_unhashable_ids_are_never_pending(speedups: Any, unhashable: Any) -> None:
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(10)
    for filled in (False, True):  # an empty dict does not even hash the key; a full one does
        if filled:
            table.add(1, loop.create_future(), 1.0)
        assert unhashable not in table
        assert table.resolve(unhashable, None) is False
        assert table.fail(unhashable, KeyError()) is False
        assert table.discard(unhashable) is False
    with pytest.raises(TypeError, match="unhashable"):
        table.add(unhashable, loop.create_future())
    assert len(table) == 1


async def test_fractional_and_boolean_ids_follow_dict_equality(speedups: Any) -> None:
    # Both twins key by dict: 1 == 1.0 == True, as they would in any dict.
    loop = asyncio.get_running_loop()
    table = speedups.PendingTable(10)
    table.add(1.5, loop.create_future())
    assert 1.5 in table and table.resolve(1.5, "x") is True
    table.add(1, loop.create_future())
    assert 1.0 in table and True in table
    with pytest.raises(ValueError, match="already pending"):
        table.add(1.0, loop.create_future())
