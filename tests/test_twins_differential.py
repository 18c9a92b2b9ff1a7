"""The two twins of ``_speedups``, held to each other for every public name and every kind of argument.

Each public function, class, method, attribute and constant of the compiled
twin and of the pure one is listed programmatically (``public_surface``); the
two lists must be equal, and each name must be claimed by a differential test
below (``@covers``), so that a name added to the twins without one fails
``test_every_public_name_has_a_differential_test``.

A differential test calls both twins with the same arguments, good and bad:
opcodes out of range, every bytes-like type (bytes and a subclass, bytearray,
memoryview, a non-contiguous one and one of 2-byte items, array, str), empty
and large inputs, malformed frames and messages, integers past 64 bits,
floats, objects with ``__index__`` or ``__float__``, a ``__bool__`` or a key
``__eq__`` that raises. Results must be equal; exceptions must be of the same
type with the same message (and the same ``code`` for FrameError), except
where Python writes the message itself for each kind of class (setting a
read-only attribute, creating a weak reference), where the type alone is
compared. Stateful objects (PendingTable, FrameParser) are driven by the same
sequence of operations, and every result, exception and the final state are
compared.

The contract chosen where the twins used to differ (issue 21) is asserted on
each twin alone, in the ``speedups`` fixture's ``py`` / ``cython`` halves:
``build_frame`` refuses any opcode but the six of RFC 6455 with ValueError,
negative and huge ones included; the frame codec takes bytes only; limits past
64 bits are clamped.
"""

from __future__ import annotations

import array
import asyncio
import copy
import inspect
import math
import pickle
import sys
import weakref
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastwsrpc import _speedups_py as py
from fastwsrpc.frames import FrameError

F = TypeVar("F", bound=Callable[..., Any])

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STATEFUL = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ coverage of the public surface

#: public name (``function``, ``Class``, ``Class.member``, ``CONSTANT``) -> the test that holds the twins to it
COVERED: Dict[str, str] = {}


def covers(*names: str) -> Callable[[F], F]:
    def mark(test: F) -> F:
        for name in names:
            assert name not in COVERED, f"{name} is claimed twice"
            COVERED[name] = test.__name__
        return test

    return mark


# Special methods a user reaches through syntax or the standard library; a twin
# defining one of them where the other does not is a difference too.
PROTOCOL_METHODS = frozenset(
    {
        "__len__",
        "__contains__",
        "__iter__",
        "__next__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__call__",
        "__bool__",
        "__eq__",
        "__hash__",
        "__enter__",
        "__exit__",
        "__aenter__",
        "__aexit__",
        "__aiter__",
        "__anext__",
        "__await__",
        "__reduce__",
        "__reduce_ex__",
        "__copy__",
        "__deepcopy__",
        "__getstate__",
    }
)


#: how to make an instance of each class, to see the attributes it sets on itself too
INSTANCE_ARGS: Dict[str, Tuple[Any, ...]] = {"PendingTable": (1,), "FrameParser": (1, True)}


def public_surface(module: Any) -> Set[str]:
    """Every public name the twin defines itself, and the public members of its classes and their instances."""
    names: Set[str] = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", module.__name__) != module.__name__:
            continue  # imported (FrameError, typing names): someone else's export
        names.add(name)
        if isinstance(value, type):
            assert name in INSTANCE_ARGS, f"add the arguments that make a {name} to INSTANCE_ARGS"
            members = set(dir(value)) | set(dir(value(*INSTANCE_ARGS[name])))
            for member in members:
                if not member.startswith("_") or (member in PROTOCOL_METHODS and member in vars(value)):
                    names.add(f"{name}.{member}")
    return names


def test_every_public_name_has_a_differential_test() -> None:
    surface = public_surface(py)
    assert surface - set(COVERED) == set(), "public names of the twins that no differential test covers"
    assert set(COVERED) - surface == set(), "covered names the twins no longer have"
    for test_name in set(COVERED.values()):
        assert callable(globals().get(test_name)) and test_name.startswith("test_")


def test_both_twins_have_the_same_public_surface(compiled: Any) -> None:
    assert public_surface(compiled) == public_surface(py)


# ------------------------------------------------------------------ comparing outcomes


def outcome(fn: Callable[..., Any], *args: Any, messages: bool = True, **kwargs: Any) -> Any:
    """What a call gives: ``("ok", result)`` or ``("raised", type, message, code)``."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        if not messages:
            return ("raised", type(exc))
        return ("raised", type(exc), str(exc), getattr(exc, "code", None))


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:80]}...({len(text)} characters)"


def same(name: str, *args: Any, compiled: Any, **kwargs: Any) -> Any:
    """Call ``name`` on both twins; assert they agree; return the pure twin's outcome."""
    expected = outcome(getattr(py, name), *args, **kwargs)
    got = outcome(getattr(compiled, name), *args, **kwargs)
    assert got == expected, f"{name}({', '.join(map(short, args))}, {short(kwargs)}): {short(got)} != {short(expected)}"
    return expected


# ------------------------------------------------------------------ odd arguments


class Index:
    """An integer by ``__index__`` only: both twins take it wherever they take an int limit."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Index({self.value})"


class BadIndex:
    def __index__(self) -> int:
        raise ValueError("no index")

    def __repr__(self) -> str:
        return "BadIndex()"


class Floaty:
    def __float__(self) -> float:
        return 2.5

    def __repr__(self) -> str:
        return "Floaty()"


class BadBool:
    def __bool__(self) -> bool:
        raise ValueError("no truth")

    def __repr__(self) -> str:
        return "BadBool()"


class Bytes(bytes):
    """A bytes subclass: bytes to both twins."""


class Str(str):
    """A str subclass: never JSON's own str to either twin."""


class Int(int):
    """An int subclass (as an IntEnum): an int to both twins."""


def pick(values: List[Any]) -> st.SearchStrategy[Any]:
    """One of ``values`` by index: hypothesis may hash what sampled_from draws, and BadHash cannot be."""
    return st.integers(0, len(values) - 1).map(values.__getitem__)


HUGE = [2**31, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**30)]
NOT_INTS: List[Any] = [1.5, 2.0, math.nan, math.inf, "3", None, b"3", [3], BadIndex(), Floaty()]
#: what the twins take as a size or a limit (max_size, max_depth, max_pending), and what they refuse
limits = st.one_of(
    st.integers(-3, 300),
    pick([*HUGE, True, False, Index(7), Index(2**70), Int(40)]),
    pick(NOT_INTS),
)
#: what they take as a deadline or ``now`` (a double), and what they refuse
doubles = st.one_of(
    st.floats(min_value=-1, max_value=11),
    st.integers(-1, 11),
    pick([math.inf, -math.inf, math.nan, -0.0, 10**400, 2**63, True, Floaty(), Index(3), "1", None, [1], BadIndex()]),
)
#: flags (``mask``, ``fin``, ``require_mask``): their truth, read once
flags = pick([True, False, 0, 1, 2, None, "", "x", [], [0], BadBool()])


class Blob:
    """Bytes drawn for a test, with a short repr: a failing example of 70 kB would be unreadable."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        if len(self.data) <= 80:
            return f"Blob({self.data!r})"
        return f"Blob({len(self.data)} bytes: {self.data[:24]!r}...{self.data[-8:]!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what hypothesis prints a failing example with
        printer.text(repr(self))


def as_kind(kind: str, blob: Any) -> Any:
    """The bytes of ``blob`` as one of the types a caller might hand over for bytes."""
    raw: bytes = blob.data if isinstance(blob, Blob) else blob
    if kind == "bytes":
        return raw
    if kind == "Bytes":
        return Bytes(raw)
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "memoryview":
        return memoryview(raw)
    if kind == "memoryview-strided":  # not contiguous: every other byte of raw doubled
        return memoryview(bytes(b for c in raw for b in (c, 0)))[::2]
    if kind == "memoryview-u16":  # 2-byte items: len() counts items, not bytes
        return memoryview(array.array("H", raw[: len(raw) // 2 * 2]))
    if kind == "array":
        return array.array("B", raw)
    if kind == "str":
        return raw.decode("latin-1")
    if kind == "str-utf8":
        return raw.decode("utf-8", "replace")
    if kind == "Str":
        return Str(raw.decode("latin-1"))
    if kind == "list":
        return list(raw)
    if kind == "None":
        return None
    assert kind == "int"
    return len(raw)


KINDS = [
    "bytes",
    "Bytes",
    "bytearray",
    "memoryview",
    "memoryview-strided",
    "memoryview-u16",
    "array",
    "str",
    "str-utf8",
    "Str",
    "list",
    "None",
    "int",
]
# Mostly bytes, as callers have; every other kind often enough.
kinds = st.sampled_from(["bytes"] * 4 + KINDS)


def sized(size: int, seed: bytes) -> bytes:
    seed = seed or b"\x00"
    return (seed * (size // len(seed) + 1))[:size]


# Empty, small, around the 7-bit/16-bit/64-bit length forms of RFC 6455 5.2, and large.
SIZES = [0, 1, 2, 3, 4, 5, 125, 126, 127, 65535, 65536, 70_001]
raw_bytes = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from(SIZES), st.binary(min_size=1, max_size=8)).map(lambda p: sized(*p)),
).map(Blob)


# ------------------------------------------------------------------ constants


@covers(
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "INTERNAL_ERROR",
    "DEFAULT_MAX_DEPTH",
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
)
def test_constants_agree(compiled: Any) -> None:
    for name in COVERED:
        if name.isupper():
            value = getattr(py, name)
            assert type(getattr(compiled, name)) is type(value) is int
            assert getattr(compiled, name) == value, name


# ------------------------------------------------------------------ frame_size, check_size


@covers("frame_size")
@FAST
@given(raw_bytes, kinds, st.text(alphabet=st.characters(exclude_categories=()), max_size=30))
def test_frame_size(compiled: Any, raw: Blob, kind: str, text: str) -> None:
    same("frame_size", as_kind(kind, raw), compiled=compiled)
    same("frame_size", text, compiled=compiled)  # surrogates too: counted as surrogatepass encodes them
    same("frame_size", Str(text), compiled=compiled)


@covers("check_size")
@FAST
@given(raw_bytes, kinds, limits)
def test_check_size(compiled: Any, raw: Blob, kind: str, max_size: Any) -> None:
    frame = as_kind(kind, raw)
    same("check_size", frame, max_size, compiled=compiled)
    same("check_size", frame, max_size=max_size, compiled=compiled)
    if isinstance(max_size, int) and not isinstance(frame, (str, int)) and frame is not None:
        same("check_size", frame, len(raw.data) - 1, compiled=compiled)  # one byte too many, exactly


# ------------------------------------------------------------------ classify, decode

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


class Collides:
    """A key that hashes like one of JSON-RPC's and refuses to be compared: a lookup of that key raises."""

    def __init__(self, like: str) -> None:
        self.like = like

    def __hash__(self) -> int:
        return hash(self.like)

    def __eq__(self, other: object) -> bool:
        raise RuntimeError(f"no comparison with {self.like}")

    def __repr__(self) -> str:
        return f"Collides({self.like!r})"


class AlwaysEqual:
    """Equal to everything, "2.0" included: still not the string "2.0"."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "AlwaysEqual()"


odd_values = pick(
    [
        math.nan,
        math.inf,
        -0.0,
        2**64,
        Int(3),
        Str("2.0"),
        Str("m"),
        AlwaysEqual(),
        (1, 2),
        b"bytes",
        bytearray(b"x"),
        object,
    ]
)
values = json_values | odd_values
message_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": pick(["2.0", "1.0", 2, None, Str("2.0"), AlwaysEqual()]),
        "method": st.one_of(st.text(max_size=6), st.integers(), st.just(Str("m"))),
        "params": values,
        "id": st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats(), st.booleans(), odd_values),
        "result": values,
        "error": st.one_of(
            values,
            st.fixed_dictionaries(
                {"code": st.one_of(st.integers(), st.text(max_size=3), st.just(Int(5)))},
                optional={"message": st.one_of(st.text(max_size=6), st.integers(), st.just(Str("x"))), "data": values},
            ),
        ),
    },
)


@st.composite
def with_colliding_key(draw: Any) -> Dict[Any, Any]:
    """A message (or its error object) holding a key whose comparison raises when a JSON-RPC key is looked up."""
    obj: Dict[Any, Any] = dict(draw(message_like))
    target = obj
    if draw(st.booleans()) and type(obj.get("error")) is dict:
        target = obj["error"] = dict(obj["error"])
    like = draw(st.sampled_from(["id", "jsonrpc", "method", "params", "result", "error", "code", "message", "data"]))
    if like not in target:  # else inserting it would compare it with the real key, and raise here
        target[Collides(like)] = 1
    return obj


class DictSub(dict):  # type: ignore[type-arg]
    pass


class ListSub(list):  # type: ignore[type-arg]
    pass


classifiable = st.one_of(
    message_like,
    with_colliding_key(),
    st.lists(st.one_of(message_like, with_colliding_key(), values), max_size=4),
    message_like.map(DictSub),
    st.lists(message_like, min_size=1, max_size=2).map(ListSub),
    values,
)


@covers("classify")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classifiable)
def test_classify(compiled: Any, obj: Any) -> None:
    same("classify", obj, compiled=compiled)


def _big_frames() -> List[bytes]:
    item = msgspec.json.encode({"jsonrpc": "2.0", "method": "m", "params": ["x" * 30, {"k": [1, 2]}], "id": 1})
    return [
        b"[" * 100_000,
        b"[" * 3_000 + b"]" * 3_000,
        b"{" * 2_000 + b"}" * 2_000,
        b'"' + b'a\\"[' * 20_000 + b'"',
        b"[" + b",".join([item] * 2_000) + b"]",
        msgspec.json.encode({"jsonrpc": "2.0", "result": "\u00e9\u4e2d" * 30_000, "id": 7}),
        b"\xff" * 70_000,
    ]


BIG_FRAMES = _big_frames()
frames = st.one_of(
    st.one_of(message_like.filter(lambda m: not isinstance(m.get("jsonrpc"), AlwaysEqual)), json_values).map(
        lambda obj: msgspec.json.encode(obj, enc_hook=str)
    ),
    st.binary(max_size=60),
    st.text(alphabet='[]{}"\\ a1,:\u00e9\U0001f600', max_size=60).map(lambda s: s.encode()),
    pick(BIG_FRAMES),
).map(Blob)


@covers("decode")
@FAST
@given(frames, kinds, st.one_of(st.just(1 << 20), limits), st.one_of(st.just(128), limits))
def test_decode(compiled: Any, raw: Blob, kind: str, max_size: Any, max_depth: Any) -> None:
    frame = as_kind(kind, raw)
    same("decode", frame, max_size, max_depth, compiled=compiled)
    same("decode", frame, max_size, compiled=compiled)  # the default depth
    same("decode", frame=frame, max_size=max_size, max_depth=max_depth, compiled=compiled)


# ------------------------------------------------------------------ the codec: apply_mask, build_frame, parse_close


@covers("apply_mask")
@FAST
@given(raw_bytes, kinds, st.binary(min_size=0, max_size=6), kinds)
def test_apply_mask(compiled: Any, raw: Blob, kind: str, mask: bytes, mask_kind: str) -> None:
    data = as_kind(kind, raw)
    same("apply_mask", data, as_kind(mask_kind, mask), compiled=compiled)
    same("apply_mask", data, mask[:4].ljust(4, b"k"), compiled=compiled)


def unmasked(result: Any) -> Any:
    """A built frame with its mask key taken out and its payload unmasked (keys are random in each twin)."""
    if result[0] != "ok":
        return result
    frame = result[1]
    assert type(frame) is bytes
    length = frame[1] & 0x7F
    header = 2 + {126: 2, 127: 8}.get(length, 0)
    if not frame[1] & 0x80:
        return result
    key = frame[header : header + 4]
    return ("ok", frame[:header], py.apply_mask(frame[header + 4 :], key))


opcodes = st.one_of(
    st.sampled_from([0, 1, 2, 8, 9, 10]),
    st.integers(-20, 300),
    pick([*HUGE, True, False, Int(1), Int(3), Int(-1)]),
    pick([*NOT_INTS, Index(1)]),
)


@covers("build_frame")
@FAST
@given(opcodes, raw_bytes, kinds, flags, flags)
def test_build_frame(compiled: Any, opcode: Any, raw: Blob, kind: str, mask: Any, fin: Any) -> None:
    payload = as_kind(kind, raw)
    for args in ((opcode, payload), (opcode, payload, mask), (opcode, payload, mask, fin)):
        expected = unmasked(outcome(py.build_frame, *args))
        got = unmasked(outcome(compiled.build_frame, *args))
        assert got == expected, f"build_frame{tuple(map(short, args))}: {short(got)} != {short(expected)}"
    kwargs = {"opcode": opcode, "payload": payload, "fin": fin}
    assert unmasked(outcome(compiled.build_frame, **kwargs)) == unmasked(outcome(py.build_frame, **kwargs))


close_payloads = st.one_of(
    st.binary(max_size=3),
    st.tuples(
        st.sampled_from([0, 999, 1000, 1001, 1004, 1005, 1006, 1007, 1014, 1015, 2999, 3000, 4999, 5000, 65535]),
        st.one_of(st.text(max_size=8).map(str.encode), st.binary(max_size=6)),
    ).map(lambda cr: cr[0].to_bytes(2, "big") + cr[1]),
    st.just(b"\x03\xe8" + b"r" * 70_000),
).map(Blob)


@covers("parse_close")
@FAST
@given(close_payloads, kinds)
def test_parse_close(compiled: Any, raw: Blob, kind: str) -> None:
    same("parse_close", as_kind(kind, raw), compiled=compiled)
    same("parse_close", payload=as_kind(kind, raw), compiled=compiled)


# ------------------------------------------------------------------ FrameParser, stateful


def raw_frame(opcode: int, payload: bytes, fin: bool, rsv: int, mask: Optional[bytes], length_form: int) -> bytes:
    """A frame exactly as told, wrong ones included (``length_form``: 0 minimal, 1 forced 16-bit, 2 forced 64-bit)."""
    head1 = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if mask is not None else 0
    n = len(payload)
    if length_form == 2 or n >= 65536:
        header = bytes((head1, bit | 127)) + n.to_bytes(8, "big")
    elif length_form == 1 or n >= 126:
        header = bytes((head1, bit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((head1, bit | n))
    if mask is None:
        return header + payload
    return header + mask + py.apply_mask(payload, mask)


@st.composite
def wire_frames(draw: Any, server: bool) -> bytes:
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15))
    if opcode == 8:
        payload = draw(close_payloads.map(lambda b: b.data).filter(lambda p: len(p) < 126) | st.binary(max_size=3))
    else:
        payload = draw(st.text(max_size=20).map(str.encode) | st.binary(max_size=20) | raw_bytes.map(lambda b: b.data))
    fin = draw(st.booleans()) if opcode < 8 else draw(st.sampled_from([True, True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0, 0, 0, 1, 4]))
    masked = server if draw(st.integers(0, 15)) else not server
    mask = draw(st.binary(min_size=4, max_size=4)) if masked else None
    return raw_frame(opcode, payload, fin, rsv, mask, draw(st.sampled_from([0, 0, 0, 1, 2])))


@st.composite
def parser_scripts(draw: Any) -> Tuple[Any, Any, List[Tuple[Any, ...]]]:
    """Constructor arguments and a script of operations on a FrameParser."""
    require_mask = draw(st.one_of(st.booleans(), flags))
    server = bool(require_mask) if not isinstance(require_mask, BadBool) else True
    max_size = draw(st.one_of(st.sampled_from([0, 1, 10, 125, 126, 200, 1 << 20]), limits))
    data = b"".join(draw(st.lists(wire_frames(server), max_size=6)))
    if draw(st.integers(0, 5)) == 0:
        data += draw(st.binary(max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    script: List[Tuple[Any, ...]] = []
    for chunk in chunks:
        script.append(("feed", draw(kinds), Blob(chunk)))
        script.append(draw(st.sampled_from([("receiving",), ("state",), ("feed", "bytes", b"")])))
    script += draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("feed"), kinds, st.binary(max_size=4)),
                st.tuples(st.just("set"), st.sampled_from(["max_size", "require_mask", "error", "closed", "other"])),
                st.tuples(st.just("delete"), st.sampled_from(["max_size", "require_mask", "error", "closed"])),
                st.tuples(st.just("copy"), st.sampled_from(["copy", "deepcopy", "pickle"])),
                st.just(("weakref",)),
            ),
            max_size=3,
        )
    )
    return max_size, require_mask, script


def parser_state(parser: Any) -> Tuple[Any, ...]:
    attributes = ("max_size", "require_mask", "error", "closed")
    return (*(outcome(getattr, parser, name, messages=False) for name in attributes), outcome(parser.receiving))


def run_parser(impl: Any, max_size: Any, require_mask: Any, script: List[Tuple[Any, ...]]) -> List[Any]:
    made = outcome(impl.FrameParser, max_size, require_mask)
    if made[0] != "ok":
        return [made]
    parser = made[1]
    trace: List[Any] = []
    for op in script:
        name = op[0]
        if name == "feed":
            trace.append(outcome(parser.feed, as_kind(op[1], op[2])))
        elif name == "receiving":
            trace.append(outcome(parser.receiving))
        elif name == "state":
            trace.append(parser_state(parser))
        elif name == "set":
            trace.append(outcome(setattr, parser, op[1], 1, messages=False))
        elif name == "delete":
            trace.append(outcome(delattr, parser, op[1], messages=False))
        elif name == "copy":
            trace.append(outcome(copying(op[1]), parser))
        else:
            trace.append(outcome(weakref.ref, parser, messages=False))
    trace.append(parser_state(parser))
    return trace


def copying(how: str) -> Callable[[Any], Any]:
    if how == "copy":
        return copy.copy
    if how == "deepcopy":
        return copy.deepcopy
    return lambda obj: pickle.loads(pickle.dumps(obj))


@covers(
    "FrameParser",
    "FrameParser.feed",
    "FrameParser.receiving",
    "FrameParser.max_size",
    "FrameParser.require_mask",
    "FrameParser.error",
    "FrameParser.closed",
    "FrameParser.__reduce__",
)
@STATEFUL
@given(parser_scripts())
def test_frame_parser(compiled: Any, script: Tuple[Any, Any, List[Tuple[Any, ...]]]) -> None:
    max_size, require_mask, ops = script
    assert run_parser(compiled, max_size, require_mask, ops) == run_parser(py, max_size, require_mask, ops)


# ------------------------------------------------------------------ PendingTable, stateful


class BadHash:
    def __hash__(self) -> int:
        raise ValueError("no hash for you")

    def __repr__(self) -> str:
        return "BadHash()"


class NotAFuture:
    """Stands where a future should: resolving or failing it raises AttributeError in both twins."""

    def __repr__(self) -> str:
        return "NotAFuture()"


call_ids = st.one_of(
    st.integers(-2, 4),
    st.text(max_size=2),
    pick([[1], {}, (1, [2]), bytearray(b"x"), 1.0, 1.5, -0.0, math.nan, True, None, 2**64, b"b", BadHash(), Int(2)]),
)
table_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), call_ids, doubles),
        st.tuples(st.just("add_default"), call_ids),
        st.tuples(st.just("add_not_a_future"), call_ids),
        st.tuples(st.just("register"), doubles),
        st.tuples(st.just("register_default")),
        st.tuples(st.just("resolve"), call_ids),
        st.tuples(st.just("fail"), call_ids),
        st.tuples(st.just("discard"), call_ids),
        st.tuples(st.just("contains"), call_ids),
        st.tuples(st.just("len")),
        st.tuples(st.just("next_id")),
        st.tuples(st.just("expire"), doubles),
        st.tuples(st.just("cancel"), st.integers(0, 40)),
        st.tuples(st.just("fail_all"), st.booleans()),
        st.tuples(st.just("get_max")),
        st.tuples(st.just("set_max"), limits),
        st.tuples(st.just("del_max")),
        st.tuples(st.just("copy"), st.sampled_from(["copy", "deepcopy", "pickle"])),
        st.tuples(st.just("weakref")),
    ),
    max_size=30,
)


def run_table(impl: Any, max_pending: Any, ops: List[Tuple[Any, ...]]) -> List[Any]:
    """Play ``ops`` on a fresh table; every result, exception and waiter state, in order."""
    loop = asyncio.new_event_loop()
    try:
        made = outcome(impl.PendingTable, max_pending)
        if made[0] != "ok":
            return [made]
        table = made[1]
        futures: List[Any] = []
        trace: List[Any] = []

        def new_future() -> Any:
            futures.append(loop.create_future())
            return futures[-1]

        failures = iter(range(1000))

        def make_exc() -> BaseException:
            return ConnectionError(f"gone {next(failures)}")

        def make_exc_badly() -> BaseException:
            if next(failures) % 2:
                raise RuntimeError("make_exc failed")
            return ConnectionError("gone")

        for op in ops:
            name, args = op[0], op[1:]
            if name == "add":
                trace.append(outcome(table.add, args[0], new_future(), args[1]))
            elif name == "add_default":
                trace.append(outcome(table.add, args[0], new_future()))
            elif name == "add_not_a_future":
                trace.append(outcome(table.add, args[0], NotAFuture()))
            elif name == "register":
                trace.append(outcome(table.register, new_future(), args[0]))
            elif name == "register_default":
                trace.append(outcome(table.register, future=new_future()))
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
                trace.append(outcome(table.next_id))
            elif name == "expire":
                trace.append(outcome(table.expire, args[0]))
            elif name == "cancel":
                if futures:
                    futures[args[0] % len(futures)].cancel()
            elif name == "fail_all":
                trace.append(outcome(table.fail_all, make_exc if args[0] else make_exc_badly))
            elif name == "get_max":
                trace.append(outcome(getattr, table, "max_pending", messages=False))
            elif name == "set_max":
                trace.append(outcome(setattr, table, "max_pending", args[0]))
            elif name == "del_max":
                trace.append(outcome(delattr, table, "max_pending"))
            elif name == "copy":
                trace.append(outcome(copying(args[0]), table))
            else:
                trace.append(outcome(weakref.ref, table, messages=False))
        trace.append(("final", len(table), outcome(getattr, table, "max_pending", messages=False)))
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


@covers(
    "PendingTable",
    "PendingTable.add",
    "PendingTable.register",
    "PendingTable.resolve",
    "PendingTable.fail",
    "PendingTable.discard",
    "PendingTable.fail_all",
    "PendingTable.expire",
    "PendingTable.next_id",
    "PendingTable.max_pending",
    "PendingTable.__len__",
    "PendingTable.__contains__",
    "PendingTable.__reduce__",
)
@STATEFUL
@given(st.one_of(st.integers(0, 5), limits), table_ops)
def test_pending_table(compiled: Any, max_pending: Any, ops: List[Tuple[Any, ...]]) -> None:
    assert run_table(compiled, max_pending, ops) == run_table(py, max_pending, ops)


# ------------------------------------------------------------------ calls that do not fit the signature


def callables(module: Any) -> List[Tuple[str, Callable[..., Any]]]:
    out: List[Tuple[str, Callable[..., Any]]] = []
    for name in sorted(public_surface(module)):
        owner, _, member = name.partition(".")
        value = getattr(module, owner)
        if member:
            value = getattr(value(*INSTANCE_ARGS[owner]), member)
        if callable(value) and not isinstance(value, type) and not name.endswith("__reduce__"):
            out.append((name, value))
    return out


def test_calls_that_do_not_fit_the_signature_are_type_errors_in_both(compiled: Any) -> None:
    ours = dict(callables(py))
    theirs = dict(callables(compiled))
    assert set(ours) == set(theirs)
    for name in ours:
        for args, kwargs in (((None,) * 6, {}), ((), {"no_such_parameter": 1})):
            # The messages are Python's and Cython's own wording of the same mistake: the type is compared.
            assert outcome(theirs[name], *args, messages=False, **kwargs) == ("raised", TypeError), name
            assert outcome(ours[name], *args, messages=False, **kwargs) == ("raised", TypeError), name


# ------------------------------------------------------------------ the contract, on each twin alone

RESERVED = [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]


@pytest.mark.parametrize("opcode", [-1, -2, -16, 16, 255, 256, 2**31, -(2**31), 2**63, -(2**63) - 1, 10**30, *RESERVED])
def test_build_frame_refuses_every_opcode_outside_rfc6455(speedups: Any, opcode: int) -> None:
    # The compiled twin used to frame -1 as 0xFF (FIN, three reserved bits, opcode 15).
    for payload in (b"", b"x" * 200):
        with pytest.raises(ValueError, match=f"^invalid opcode {opcode}$"):
            speedups.build_frame(opcode, payload)


@pytest.mark.parametrize("opcode", [1.0, "1", None, b"\x01"])
def test_build_frame_wants_an_int_opcode(speedups: Any, opcode: Any) -> None:
    with pytest.raises(TypeError, match=f"^opcode must be an int, not {type(opcode).__name__}$"):
        speedups.build_frame(opcode, b"")


def test_build_frame_takes_int_subclasses_by_value(speedups: Any) -> None:
    assert speedups.build_frame(True, b"x") == speedups.build_frame(1, b"x") == b"\x81\x01x"
    assert speedups.build_frame(Int(9), b"p") == b"\x89\x01p"


NOT_BYTES: List[Any] = [
    bytearray(b"\x03\xe8ab"),
    memoryview(b"\x03\xe8ab"),
    array.array("B", b"\x03\xe8ab"),
    "\x03\xe8ab",
    None,
    4,
    [3, 232, 97, 98],
]


@pytest.mark.parametrize("value", NOT_BYTES, ids=lambda v: type(v).__name__)
def test_the_frame_codec_takes_bytes_only(speedups: Any, value: Any) -> None:
    """The pure twin used to take bytearray and memoryview (and build a wrong header for a
    memoryview of wider items); the compiled one refused them, and read None as an empty buffer."""
    name = type(value).__name__
    calls: List[Tuple[str, Callable[[], Any]]] = [
        ("payload", lambda: speedups.build_frame(1, value)),
        ("payload", lambda: speedups.build_frame(1, value, True)),
        ("data", lambda: speedups.apply_mask(value, b"abcd")),
        ("mask", lambda: speedups.apply_mask(b"abcd", value)),
        ("payload", lambda: speedups.parse_close(value)),
        ("data", lambda: speedups.FrameParser(100, False).feed(value)),
    ]
    for argument, call in calls:
        with pytest.raises(TypeError, match=f"^{argument} must be bytes, not {name}$"):
            call()


def test_bytes_subclasses_are_bytes(speedups: Any) -> None:
    assert speedups.build_frame(1, Bytes(b"hi")) == b"\x81\x02hi"
    assert speedups.apply_mask(Bytes(b"\x00\x00"), Bytes(b"abcd")) == b"ab"
    assert speedups.parse_close(Bytes(b"\x03\xe8ok")) == (1000, "ok")
    assert speedups.FrameParser(100, False).feed(Bytes(b"\x82\x01z")) == [(2, b"z")]


def test_a_failed_parser_still_refuses_what_is_not_bytes(speedups: Any) -> None:
    parser = speedups.FrameParser(100, False)
    assert parser.feed(b"\x83\x00") == [] and parser.error == FrameError(1002, "invalid opcode")
    with pytest.raises(TypeError, match=r"^data must be bytes, not bytearray$"):
        parser.feed(bytearray(b"x"))


def test_limits_past_64_bits_are_clamped_and_must_be_integers(speedups: Any) -> None:
    assert speedups.decode(b'{"jsonrpc":"2.0","method":"m"}', 2**70, 2**70).method == "m"
    assert speedups.decode(b"[[1]]", 10**30, -(10**30)).message == "Parse error: nested deeper than 0 levels"
    assert speedups.check_size(b"x" * 10, 2**64) is None
    assert speedups.PendingTable(2**70).max_pending == sys.maxsize
    assert speedups.FrameParser(-(2**70), True).max_size == -sys.maxsize - 1
    assert speedups.FrameParser(Index(5), 1).max_size == 5
    calls: List[Callable[[], Any]] = [
        lambda: speedups.decode(b"{}", 10.0),
        lambda: speedups.decode(b"{}", 10, None),  # the pure twin used to answer -32700 here
        lambda: speedups.check_size(b"{}", "10"),
        lambda: speedups.PendingTable(1.5),
        lambda: speedups.FrameParser(1.5, True),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
            call()


def test_max_pending_is_a_checked_attribute(speedups: Any) -> None:
    table = speedups.PendingTable(3)
    table.max_pending = Index(4)
    assert table.max_pending == 4
    with pytest.raises(TypeError):
        table.max_pending = 2.5
    with pytest.raises(AttributeError, match="max_pending cannot be deleted"):
        del table.max_pending
    assert table.max_pending == 4


def test_parser_attributes_are_read_only(speedups: Any) -> None:
    parser = speedups.FrameParser(10, "yes")
    assert parser.require_mask is True  # its truth, as a bool
    for name in ("max_size", "require_mask", "error", "closed", "anything_else"):
        with pytest.raises(AttributeError):
            setattr(parser, name, 1)


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_live_objects_are_neither_copied_nor_pickled(speedups: Any, how: str) -> None:
    for obj in (speedups.PendingTable(1), speedups.FrameParser(1, True)):
        with pytest.raises(TypeError, match=f"^cannot pickle '{type(obj).__name__}' object$"):
            copying(how)(obj)


def test_classify_wants_json_strings(speedups: Any) -> None:
    # The pure twin used to take a str subclass, or anything equal to "2.0", as the version.
    for version in (Str("2.0"), AlwaysEqual()):
        got = speedups.classify({"jsonrpc": version, "method": "m"})
        assert got.message == 'Invalid Request: "jsonrpc" must be "2.0"'


def test_classify_lets_a_failing_key_comparison_through(speedups: Any) -> None:
    # The compiled twin used to swallow it (PyDict_GetItem) where the pure one raised.
    with pytest.raises(RuntimeError, match="no comparison with jsonrpc"):
        speedups.classify({Collides("jsonrpc"): 1, "id": 1})
