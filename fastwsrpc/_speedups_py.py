"""Pure-Python twin of ``_speedups.pyx``: the per-message hot path.

Same names, signatures, results and exceptions as the compiled module (the
contract is written down in ``_speedups.pyi``); ``tests/test_speedups.py`` feeds
both the same inputs, malformed ones included, and compares what comes out, and
``tests/test_twins_differential.py`` does so for every public name, arguments of
the wrong type included. Change one, change the other.

Arguments are read as the compiled twin's C parameters read them: sizes and
limits are integers (``__index__``), clamped to what Py_ssize_t holds (see
``_limit``); deadlines and ``now`` are what ``PyFloat_AsDouble`` takes (no
strings); flags are read once, for their truth; frames and payloads of the
codec are bytes. Each check costs one type test on the usual argument.
"""

from __future__ import annotations

import codecs
import math
import operator
import os
import sys
import zlib
from array import array
from asyncio import InvalidStateError
from itertools import accumulate
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple, Union

import msgspec

from .errors import RpcBackpressureError, RpcMessageTooLargeError, RpcTimeoutError
from .frames import FrameError as FrameError
from .protocol import MAX_ID_LENGTH as _MAX_ID_LENGTH
from .protocol import (
    Batch,
    ErrorObject,
    Invalid,
    Message,
    Notification,
    Request,
    Response,
)

_json_decode = msgspec.json.Decoder().decode
_MISSING: Any = object()
_isfinite = math.isfinite
_index = operator.index
_SSIZE_MAX = sys.maxsize
_SSIZE_MIN = -sys.maxsize - 1


def _limit(value: Any) -> int:
    """A size or a limit argument (``max_size``, ``max_depth``, ``max_pending``), as both twins read it.

    Any integer (``__index__``: TypeError for a float, with the message of
    ``operator.index``). A value past what the compiled twin's Py_ssize_t holds
    could never be reached, so it is clamped rather than refused: 2**70 is as
    good as no limit. Only called off the hot path (for a non-int, or from
    constructors and setters).
    """
    value = int(_index(value))  # int(): Python 3.9's index() hands a bool back as it is
    return _SSIZE_MIN if value < _SSIZE_MIN else _SSIZE_MAX if value > _SSIZE_MAX else value


def _double(value: Any) -> float:
    """``value`` as the compiled twin's ``double`` parameters take it: ``PyFloat_AsDouble``, as ldexp reads it."""
    return math.ldexp(value, 0)


PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
#: Deepest nesting of ``[`` / ``{`` that ``decode`` hands to the JSON parser:
#: msgspec recurses once per level, while real JSON-RPC payloads nest a handful.
DEFAULT_MAX_DEPTH = 128
_INF = float("inf")

# The depth scan works on a frame's skeleton: quotes and brackets only, braces
# read as brackets (depth does not tell them apart), escapes dropped first.
_ESCAPED = (b'\\"', b"\\[", b"\\]", b"\\{", b"\\}")
_TO_SKELETON = bytes.maketrans(b"{}", b"[]")
_NOT_SKELETON = bytes(c for c in range(256) if c not in b'"[]{}')
_STEPS = bytes.maketrans(b"[]", b"\x01\xff")  # as signed bytes: +1 opens, -1 closes
# Below this size, two counts are the cheapest first look at a frame (calls
# cost more than passes); from it on, passes cost more (see _too_deep).
_ONE_PASS_SIZE = 2048


def frame_size(frame: Union[str, bytes]) -> int:
    """Size of a frame in bytes as it travelled (UTF-8 for text)."""
    if type(frame) is str:
        return len(frame.encode("utf-8", "surrogatepass"))
    return len(frame)


def check_size(frame: Union[str, bytes], max_size: int) -> None:
    """Refuse a frame over ``max_size`` bytes before anything parses it.

    For text, ``len`` counts characters, and a character is 1 to 4 bytes in
    UTF-8, so only a frame between max_size/4 and max_size characters needs its
    exact byte size computed.
    """
    if type(max_size) is not int or not _SSIZE_MIN <= max_size <= _SSIZE_MAX:
        max_size = _limit(max_size)
    n = len(frame)
    if n * 4 <= max_size:
        return
    if n > max_size or (type(frame) is str and frame_size(frame) > max_size):
        raise RpcMessageTooLargeError(
            f"message of {frame_size(frame)} bytes exceeds max_message_size of {max_size} bytes"
        )


def _bad_id(value: Any) -> str:
    """Why ``value`` cannot be a JSON-RPC id, or ``""`` when it can.

    ``type(...) is`` rather than isinstance, so that ``true`` (a bool, hence an
    int) is refused. Fractional numbers are discouraged by the spec but allowed,
    and are echoed as they came; NaN and infinities cannot come from JSON, and
    are refused when handed to ``classify`` directly because they would not
    encode back as the same number.
    """
    t = type(value)
    if t is int or value is None:
        return ""
    if t is str:
        if len(value) > _MAX_ID_LENGTH:
            return f"Invalid Request: id longer than {_MAX_ID_LENGTH} characters"
        return ""
    if t is float and _isfinite(value):
        return ""
    return "Invalid Request: id must be a string, a number or null"


def _classify_one(obj: Any) -> Message:
    if type(obj) is not dict:
        return Invalid(None, INVALID_REQUEST, "Invalid Request: expected an object")
    call_id = obj.get("id", _MISSING)
    has_id = call_id is not _MISSING
    if has_id:
        reason = _bad_id(call_id)
        if reason:
            return Invalid(None, INVALID_REQUEST, reason)
    else:
        call_id = None
    jsonrpc = obj.get("jsonrpc")
    if type(jsonrpc) is not str or jsonrpc != "2.0":  # a str subclass or an object equal to "2.0" is not JSON's
        return Invalid(call_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    method = obj.get("method", _MISSING)
    if method is not _MISSING:
        if type(method) is not str:
            return Invalid(call_id, INVALID_REQUEST, "Invalid Request: method must be a string")
        params = obj.get("params")
        if params is not None and type(params) is not dict and type(params) is not list:
            return Invalid(call_id, INVALID_REQUEST, "Invalid Request: params must be an object or an array")
        if has_id:
            return Request(method, params, call_id)
        return Notification(method, params)
    if not has_id:
        return Invalid(None, INVALID_REQUEST, "Invalid Request: no method and no id")
    error = obj.get("error", _MISSING)
    if error is _MISSING:
        return Response(call_id, obj.get("result"), None)
    if "result" in obj:
        return Response(call_id, None, ErrorObject(INTERNAL_ERROR, "Invalid response: both result and error", None))
    if type(error) is dict:
        code = error.get("code")
        message = error.get("message")
        if type(code) is int and type(message) is str:
            return Response(call_id, None, ErrorObject(code, message, error.get("data")))
    return Response(call_id, None, ErrorObject(INTERNAL_ERROR, "Invalid response: malformed error", error))


def classify(obj: Any) -> Message:
    """Turn one decoded JSON value into a typed message (a Batch for arrays)."""
    t = type(obj)
    if t is dict:
        return _classify_one(obj)
    if t is list:
        if not obj:
            return Invalid(None, INVALID_REQUEST, "Invalid Request: empty batch")
        return Batch([_classify_one(item) for item in obj])
    return Invalid(None, INVALID_REQUEST, "Invalid Request: expected an object or an array")


def _too_deep(frame: Union[str, bytes], max_depth: int) -> bool:
    """Whether ``[`` / ``{`` nest deeper than ``max_depth`` outside strings.

    Counting brackets settles almost every frame, since nesting cannot exceed
    their number. A frame with more (a large result can have thousands,
    legitimately) is read through its skeleton, built with whole-buffer bytes
    operations, never a Python loop over characters or regex matches, whose
    per-item cost would rival the JSON parse:

    * escapes go first, ``\\\\`` pairs before the rest, so ``\\\\"`` still ends a string;
    * a few passes drop every ``""`` (an empty string, or a gap without
      brackets: quote parity, hence inside/outside, is unchanged for the rest)
      and every innermost ``[]``. Nesting is at most the passes that dropped a
      pair plus the openers left, which settles ordinary shallow JSON;
    * otherwise, brackets after an even number of quotes are outside strings,
      and the highest running sum of their +1 / -1 steps is the depth.

    This reads a frame exactly as the compiled twin's loop does: a backslash
    escapes the next character inside strings and out, an unterminated string
    runs to the end, closers are not floored at zero. Those cases are malformed
    JSON, refused either way, but both twins must give the same answer. Text is
    read as UTF-8, in which none of these characters can be part of another.
    """
    if max_depth < 0:
        max_depth = 0
    if type(frame) is str:
        data = frame.encode("utf-8", "surrogatepass")
    else:
        # bytearray and memoryview, beyond the annotation: msgspec takes them too
        data = frame if type(frame) is bytes else bytes(frame)  # type: ignore[arg-type]
    skeleton = data.translate(_TO_SKELETON, _NOT_SKELETON)
    if skeleton.count(b"[") <= max_depth:  # decode counts small frames; this is the count for large ones
        return False
    if b"\\" in data:
        data = data.replace(b"\\\\", b"")
        for pair in _ESCAPED:
            data = data.replace(pair, b"")
        skeleton = data.translate(_TO_SKELETON, _NOT_SKELETON)
    rest, peeled = skeleton, 0
    for _ in range(8):
        shorter = rest.replace(b'""', b"")
        fewer = shorter.replace(b"[]", b"")
        if len(fewer) < len(shorter):
            peeled += 1
        elif len(shorter) == len(rest):
            break
        rest = fewer
    if peeled + rest.count(b"[") <= max_depth:
        return False
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    return max(accumulate(array("b", skeleton.translate(_STEPS))), default=0) > max_depth


def decode(frame: Union[str, bytes], max_size: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Message:
    """Size check, depth check, one JSON decode, classification: the whole per-frame path.

    Only the size check may raise: whatever else goes wrong with a frame
    (bad UTF-8, numbers out of range, nesting the parser cannot recurse into)
    is the peer's mistake and is answered with -32700, never an exception that
    would take the read loop down. Depth is checked before parsing because the
    parser recurses once per level: a few kilobytes of ``[`` would otherwise
    cost a deep C stack and end in RecursionError (or worse, under a raised
    recursion limit), where a linear scan costs nothing. A negative
    ``max_depth`` counts as 0.
    """
    if type(max_size) is not int or type(max_depth) is not int:
        # A limit that is no integer is the caller's mistake: raised, never a -32700. An int
        # past 64 bits is left as it is: below, it compares as its clamped value would.
        max_size, max_depth = _limit(max_size), _limit(max_depth)
    n = len(frame)
    if n * 4 > max_size:  # check_size's own shortcut, taken here to save a call per frame
        check_size(frame, max_size)
    try:
        if n > max_depth:
            # Nesting cannot exceed the number of openers, and two counts are the
            # cheapest way to learn that a small frame has few. A large one is
            # counted in _too_deep, on the skeleton it builds anyway: one pass.
            if n >= _ONE_PASS_SIZE:
                deep = _too_deep(frame, max_depth)
            elif type(frame) is bytes:
                deep = frame.count(b"[") + frame.count(b"{") > max_depth and _too_deep(frame, max_depth)
            elif type(frame) is str:
                deep = frame.count("[") + frame.count("{") > max_depth and _too_deep(frame, max_depth)
            else:
                deep = _too_deep(frame, max_depth)
            if deep:
                return Invalid(None, PARSE_ERROR, f"Parse error: nested deeper than {max(max_depth, 0)} levels")
        obj = _json_decode(frame)
    except Exception:
        return Invalid(None, PARSE_ERROR, "Parse error")
    if type(obj) is dict:  # classify's first step, without its call
        return _classify_one(obj)
    return classify(obj)


class PendingTable:
    """Outgoing calls waiting for their answer, by id.

    Futures by id, and deadlines (``loop.time()`` based) only for entries that
    have one: a call with a timeout is timed out by its own timer, so most
    entries carry none and cost one dict slot. Every operation is O(1) but
    ``expire`` and ``fail_all``, which run on a timer and at close; nothing is
    kept once an entry resolves.

    Lookups (``resolve``, ``fail``, ``discard``, ``in``) take any object and
    answer False for one that cannot be a dict key: it cannot have been added,
    so it is not pending, and a stray id must not raise out of the read loop.
    ``add`` refuses such an id with the dict's own TypeError.
    """

    __slots__ = ("_deadlines", "_futures", "_max_pending", "_next_id")

    def __init__(self, max_pending: int) -> None:
        max_pending = _limit(max_pending)
        # Keyed by Any rather than Hashable: lookups accept any object (see above).
        self._futures: Dict[Any, Any] = {}
        self._deadlines: Dict[Any, float] = {}
        self._next_id = 0
        self._max_pending = max_pending

    @property
    def max_pending(self) -> int:
        return self._max_pending

    @max_pending.setter
    def max_pending(self, value: int) -> None:
        self._max_pending = _limit(value)

    @max_pending.deleter
    def max_pending(self) -> None:
        raise AttributeError("max_pending cannot be deleted")

    def __reduce__(self) -> Any:
        # Live waiters have no meaning in a copy: copy and pickle refuse, in both twins.
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _full(self) -> RpcBackpressureError:
        return RpcBackpressureError(
            f"{len(self._futures)} calls are pending, the limit is {self._max_pending}; "
            "wait for some to finish or raise max_pending_requests"
        )

    def register(self, future: Any, deadline: float = _INF) -> int:
        """Allocate the next id and add ``future`` under it: one call per outgoing request."""
        if type(deadline) is not float:
            deadline = _double(deadline)
        futures = self._futures
        if len(futures) >= self._max_pending:
            raise self._full()
        self._next_id += 1
        call_id = self._next_id
        futures[call_id] = future
        if deadline != _INF:
            self._deadlines[call_id] = deadline
        return call_id

    def add(self, call_id: Hashable, future: Any, deadline: float = _INF) -> None:
        """Add ``future`` under an id chosen by the caller (``async_call(call_id=...)``)."""
        if type(deadline) is not float:
            deadline = _double(deadline)
        if len(self._futures) >= self._max_pending:
            raise self._full()
        if call_id in self._futures:
            raise ValueError(f"call id {call_id!r} is already pending")
        self._futures[call_id] = future
        if deadline != _INF:
            self._deadlines[call_id] = deadline

    def resolve(self, call_id: object, response: Any) -> bool:
        try:
            future = self._futures.pop(call_id, None)
        except TypeError:  # unhashable: never added
            return False
        if future is None:
            return False
        if self._deadlines:
            self._deadlines.pop(call_id, None)
        try:
            future.set_result(response)
        except InvalidStateError:  # the waiter was cancelled meanwhile
            pass
        return True

    def fail(self, call_id: object, exc: BaseException) -> bool:
        try:
            future = self._futures.pop(call_id, None)
        except TypeError:
            return False
        if future is None:
            return False
        if self._deadlines:
            self._deadlines.pop(call_id, None)
        try:
            future.set_exception(exc)
        except InvalidStateError:
            pass
        return True

    def discard(self, call_id: object) -> bool:
        try:
            future = self._futures.pop(call_id, None)
        except TypeError:
            return False
        if future is None:
            return False
        if self._deadlines:
            self._deadlines.pop(call_id, None)
        return True

    def fail_all(self, make_exc: Callable[[], BaseException]) -> int:
        futures = self._futures
        self._futures = {}
        self._deadlines = {}
        for future in futures.values():
            if not future.done():
                future.set_exception(make_exc())
        return len(futures)

    def expire(self, now: float) -> List[Hashable]:
        if type(now) is not float:
            now = _double(now)
        expired = [cid for cid, deadline in self._deadlines.items() if deadline <= now]
        for cid in expired:
            del self._deadlines[cid]
            future = self._futures.pop(cid)
            if not future.done():
                future.set_exception(RpcTimeoutError(f"no answer to call {cid!r} before its deadline"))
        return expired

    def __len__(self) -> int:
        return len(self._futures)

    def __contains__(self, call_id: object) -> bool:
        try:
            return call_id in self._futures
        except TypeError:
            return False


# ---------------------------------------------------------------------------
# WebSocket frames (RFC 6455), for the native server and client.
#
# The rules and their order follow ``websockets``' own parser (``Frame.parse``
# then ``Protocol.recv_frame``), its oracle in tests/test_codec.py: opcode, then
# masking, then the size limit (from the header, before any payload is kept),
# then reserved bits and control-frame rules once the frame is whole, then
# fragmentation; text is checked as UTF-8 fragment by fragment, as websockets'
# asyncio layer decodes it. Errors are FrameError(close code, reason), kept in
# ``parser.error`` so that what came before the fault is still delivered.

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

_OPCODES = frozenset({OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG})
#: Close codes a peer may send (RFC 6455 section 7.4, as websockets checks them).
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
_MASK_POOL_SIZE = 4096
_mask_pool = b""
_mask_pos = _MASK_POOL_SIZE


def _bytes_arg(name: str, value: object) -> bytes:
    """The bytes of a ``bytes`` argument that is not exactly bytes; TypeError for any other type.

    Only bytes (subclasses too, read as their raw bytes) are taken, as by the
    compiled twin, which reads no other buffer: every caller has bytes, and a
    memoryview's len() counts items, not bytes, so it would make a header lie.
    """
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return bytes(memoryview(value))


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR the 4-byte ``mask`` repeated (masking and unmasking are the same operation).

    One big-integer XOR: linear, in C, and free of a per-byte Python loop.
    """
    if type(data) is not bytes:
        data = _bytes_arg("data", data)
    if type(mask) is not bytes:
        mask = _bytes_arg("mask", mask)
    if len(mask) != 4:
        raise ValueError("a WebSocket mask is 4 bytes")
    n = len(data)
    if not n:
        return b""
    key = (mask * ((n + 3) // 4))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _new_mask() -> bytes:
    """4 unpredictable bytes (RFC 6455 10.3), drawn from a pool so that a frame costs no syscall."""
    global _mask_pool, _mask_pos
    if _mask_pos >= _MASK_POOL_SIZE:
        _mask_pool = os.urandom(_MASK_POOL_SIZE)
        _mask_pos = 0
    key = _mask_pool[_mask_pos : _mask_pos + 4]
    _mask_pos += 4
    return key


def build_frame(opcode: int, payload: bytes, mask: bool = False, fin: bool = True, rsv1: bool = False) -> bytes:
    """One frame: header, then the payload (masked with a fresh key when ``mask``, as a client must).

    ``opcode``: an int, one of the six of RFC 6455 section 5.2 (ValueError for any
    other, negative or huge; TypeError for a non-int); ``payload``: bytes.
    ``rsv1``: the first frame of a compressed message (permessage-deflate, RFC 7692):
    only on a text or binary frame (ValueError otherwise).
    """
    mask = True if mask else False  # read once each, first, as the compiled twin's bint parameters
    fin = True if fin else False
    rsv1 = True if rsv1 else False
    if type(opcode) is not int:
        if not isinstance(opcode, int):
            raise TypeError(f"opcode must be an int, not {type(opcode).__name__}")
        if int.__index__(opcode) not in _OPCODES:  # its value, whatever a subclass makes of == and hash
            raise ValueError(f"invalid opcode {opcode}")
        opcode = int.__index__(opcode)
    elif opcode not in _OPCODES:
        raise ValueError(f"invalid opcode {opcode}")
    if type(payload) is not bytes:
        payload = _bytes_arg("payload", payload)
    n = len(payload)
    if opcode >= OP_CLOSE and (n > 125 or not fin):
        raise ValueError("a control frame is whole and carries at most 125 bytes")
    if rsv1 and not OP_TEXT <= opcode <= OP_BINARY:
        raise ValueError("only the first frame of a text or binary message is compressed (RSV1)")
    head1 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((head1, bit | n))
    elif n < 65536:
        header = bytes((head1, bit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((head1, bit | 127)) + n.to_bytes(8, "big")
    if mask:
        key = _new_mask()
        return header + key + apply_mask(payload, key)
    return header + payload


def parse_close(payload: bytes) -> Tuple[int, str]:
    """Code and reason of a close frame's payload (1005 when it has none); FrameError when malformed."""
    if type(payload) is not bytes:
        payload = _bytes_arg("payload", payload)
    n = len(payload)
    if n == 0:
        return 1005, ""
    if n == 1:
        raise FrameError(1002, "close frame too short")
    code = int.from_bytes(payload[:2], "big")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(1007, "invalid UTF-8 in the close reason") from None
    if not (code in _SENDABLE_CODES or 3000 <= code < 5000):
        raise FrameError(1002, f"invalid close code {code}")
    return code, reason


class FrameParser:
    """Sans-I/O WebSocket reader: ``feed`` it bytes, get back whole messages and control frames.

    ``feed`` returns ``(opcode, payload)`` pairs: ``OP_TEXT`` / ``OP_BINARY``
    with the whole message (fragments joined; text checked as UTF-8 but kept
    as bytes, since msgspec parses bytes), and ``OP_PING`` / ``OP_PONG`` /
    ``OP_CLOSE`` as they come, even between the fragments of a message. A close
    frame ends the stream: what follows it is discarded. A fault sets
    ``error`` (a FrameError naming the close code) and ends the stream too.

    ``max_size`` bounds a message, all fragments together, and is applied from
    each frame's header: a frame that would cross it is refused (1009) before
    any of its payload is kept. ``require_mask``: the server's rule (frames from
    a client are masked); a client's parser wants them unmasked.

    permessage-deflate (RFC 7692), once negotiated: ``window_bits`` (8 to 15) is
    the peer's LZ77 window (1 to 7 read as 8); 0, the default, means no compression, and RSV1 is a
    protocol error as any reserved bit. With it, RSV1 on the first frame of a
    text or binary message says the message is compressed: its frames are
    inflated as they come, the inflated size held to ``max_size`` while zlib
    works (``max_length``: a small frame that would inflate past it is a 1009,
    never the memory), and text is checked as UTF-8 once inflated. The
    decompressor is made on the first compressed message only (an idle
    connection holds no zlib state) and kept for the next one (context
    takeover), or dropped after each message with ``no_context_takeover`` (the
    peer's: it starts every message afresh). Corrupt deflate data is a 1002.

    A frame whose payload is not all in the data at hand is taken piece by
    piece as the data comes, each piece unmasked once (and, for text, checked)
    and the pieces joined once the frame is whole: no buffer holds the payload
    in the meantime (the compiled twin reads it straight into the bytes object
    it hands out). Its rules are applied exactly as if it had come whole.

    The four public attributes are read-only, as the compiled twin's.
    """

    __slots__ = (
        "_big",
        "_big_b1",
        "_big_decoder",
        "_big_fill",
        "_big_key",
        "_big_len",
        "_buffer",
        "_checked",
        "_closed",
        "_decoder",
        "_error",
        "_frame_decoder",
        "_inflater",
        "_inflating",
        "_max_size",
        "_no_context_takeover",
        "_opcode",
        "_parts",
        "_require_mask",
        "_size",
        "_window_bits",
    )

    def __init__(
        self, max_size: int, require_mask: bool, window_bits: int = 0, no_context_takeover: bool = False
    ) -> None:
        self._max_size = _limit(max_size)
        self._require_mask = True if require_mask else False
        self._window_bits = _window_bits(window_bits)
        self._no_context_takeover = True if no_context_takeover else False
        self._inflater: Any = None  # zlib's decompressor, made on the first compressed message
        self._inflating = False  # the fragmented message under way is compressed
        self._error: Optional[FrameError] = None
        self._closed = False
        self._buffer = bytearray()
        self._parts: List[bytes] = []
        self._opcode = 0  # of the fragmented message under way; 0: none
        self._size = 0  # its bytes so far
        self._decoder: Any = None  # its UTF-8 check, when it is text
        self._checked = 0  # payload bytes of the incomplete text frame already checked
        self._frame_decoder: Any = None  # their UTF-8 check, when that frame starts a text message
        # The incomplete frame being read piece by piece (see _stream); _big is None: none.
        self._big: Optional[List[bytes]] = None  # its payload so far, unmasked, in pieces
        self._big_fill = 0
        self._big_len = 0
        self._big_b1 = 0
        self._big_key: Optional[bytes] = None  # its mask key (None: not masked)
        self._big_decoder: Any = None  # the UTF-8 check of its pieces as they come, or None

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def require_mask(self) -> bool:
        return self._require_mask

    @property
    def error(self) -> Optional[FrameError]:
        return self._error

    @property
    def closed(self) -> bool:
        return self._closed

    def __reduce__(self) -> Any:
        # A half-read frame has no meaning in a copy: copy and pickle refuse, in both twins.
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def receiving(self) -> bool:
        """Whether part of a frame or of a fragmented message is waiting for the rest (slowloris watch)."""
        return bool(self._buffer) or self._opcode != 0 or self._big is not None

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        """Parse what ``data`` completes; an incomplete frame waits (its header buffered, its payload in pieces)."""
        if type(data) is not bytes:
            data = _bytes_arg("data", data)
        if self._error is not None or self._closed:
            return []
        events: List[Tuple[int, bytes]] = []
        buf = self._buffer
        try:
            if self._big is not None:
                # The rest of a frame under way (nothing is buffered while one is).
                taken = self._stream(data, events)
                if self._closed or taken == len(data):
                    return events
                data = data[taken:]
            buf += data
            pos = self._parse(buf, events)
        except FrameError as exc:
            self._error = exc
            self._buffer = bytearray()
            self._parts = []
            self._decoder = self._frame_decoder = self._inflater = None
            self._big = self._big_decoder = None
            return events
        if self._closed:
            self._buffer = bytearray()
        else:
            del buf[:pos]
        return events

    def _parse(self, buf: bytearray, events: List[Tuple[int, bytes]]) -> int:
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b1 = buf[pos]
            b2 = buf[pos + 1]
            opcode = b1 & 0x0F
            if opcode not in _OPCODES:
                raise FrameError(1002, "invalid opcode")
            masked = b2 & 0x80
            if bool(masked) != self._require_mask:
                raise FrameError(1002, "incorrect masking")
            length = b2 & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            limit = self._max_size - self._size if self._opcode else self._max_size
            if length > limit:
                if self._opcode:
                    raise FrameError(
                        1009,
                        f"message over max_size ({self._max_size} bytes): its next frame of {length} bytes "
                        f"passes the {limit} bytes left",
                    )
                raise FrameError(1009, f"message of {length} bytes exceeds max_size ({self._max_size} bytes)")
            if masked:
                if n - start < 4:
                    break  # the key is not all here: wait for it with the header
                start += 4
            end = start + length
            if end > n:
                # The payload is read in pieces as it comes (see _stream). Fail fast on
                # UTF-8 (Autobahn 6.4.3): what comes of a text frame is checked as it comes,
                # not once the frame is whole; only for a frame whose header the checks of
                # _frame would pass, so that the error is the one the whole frame would
                # have given. A compressed message is checked once inflated (RSV1 on its
                # first frame, or its continuation: _inflating).
                decoder = None
                if not b1 & 0x70:
                    if opcode == OP_TEXT and not self._opcode:
                        decoder = self._frame_decoder = _Utf8Decoder()
                    elif opcode == OP_CONT and self._decoder is not None and not self._inflating:
                        decoder = self._decoder
                self._big = []
                self._big_fill = 0
                self._big_len = length
                self._big_b1 = b1
                self._big_key = bytes(buf[start - 4 : start]) if masked else None
                self._big_decoder = decoder
                self._checked = 0
                with memoryview(buf) as view:
                    self._stream(bytes(view[start:n]), events)
                return n
            payload = bytes(buf[start:end])
            if masked:
                payload = apply_mask(payload, bytes(buf[start - 4 : start]))
            pos = end
            if b1 == 0x81 and not self._opcode:  # a whole text message: _frame's own outcome, without the call
                if not payload.isascii():
                    _check_text(_Utf8Decoder(), payload, True)
                events.append((OP_TEXT, payload))
            elif b1 == 0x82 and not self._opcode:  # a whole binary message, likewise
                events.append((OP_BINARY, payload))
            elif self._frame(b1, payload, 0, events):
                return pos
        return pos

    def _stream(self, data: bytes, events: List[Tuple[int, bytes]]) -> int:
        """Take what ``data`` holds of the frame under way; the frame's rules once it is whole.

        Returns the bytes taken. Each piece is unmasked once and, for text, checked
        at once (the same error, in the same ``feed``, as the compiled twin); the
        pieces are joined once the frame is whole. The check runs only where
        nothing else about the frame can be wrong, so checking the last piece
        before the frame's rules changes no outcome.
        """
        fill = self._big_fill
        take = min(self._big_len - fill, len(data))
        piece = data if take == len(data) else data[:take]
        key = self._big_key
        if key is not None and take:
            shift = fill & 3
            piece = apply_mask(piece, key[shift:] + key[:shift])
        if self._big_decoder is not None:
            _check_text(self._big_decoder, piece, False)
            self._checked = fill + take
        pieces = self._big
        assert pieces is not None
        if take:
            pieces.append(piece)
        fill += take
        self._big_fill = fill
        if fill == self._big_len:
            payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self._big = self._big_decoder = None
            checked, self._checked = self._checked, 0
            self._frame(self._big_b1, payload, checked, events)
        return take

    def _frame(self, b1: int, payload: bytes, checked: int, events: List[Tuple[int, bytes]]) -> bool:
        """A whole frame's rules and event (``checked``: its text bytes checked already); True at a close."""
        opcode = b1 & 0x0F
        length = len(payload)
        compressed = False
        if b1 & 0x70:
            # RSV1 is permessage-deflate's, on the first frame of a data message only.
            if b1 & 0x70 != 0x40 or not self._window_bits or not OP_TEXT <= opcode <= OP_BINARY:
                raise FrameError(1002, "reserved bits must be 0")
            compressed = True
        fin = b1 & 0x80
        if opcode >= OP_CLOSE:
            if length > 125:
                raise FrameError(1002, "control frame too long")
            if not fin:
                raise FrameError(1002, "fragmented control frame")
            if opcode == OP_CLOSE:
                parse_close(payload)
                # A close ends the stream, a fragmented message under way with it
                # (control frames may come between fragments: Autobahn 7.1.5).
                events.append((OP_CLOSE, payload))
                self._closed = True
                self._parts = []
                self._opcode = self._size = 0
                self._decoder = self._inflater = None
                self._inflating = False
                return True
            events.append((opcode, payload))
        elif opcode == OP_CONT:
            if not self._opcode:
                raise FrameError(1002, "unexpected continuation frame")
            if self._inflating:
                payload = self._inflate(payload, bool(fin))
                length = len(payload)
            if self._decoder is not None:
                _check_text(self._decoder, payload[checked:] if checked else payload, bool(fin))
            self._parts.append(payload)
            if fin:
                events.append((self._opcode, b"".join(self._parts)))
                self._opcode = self._size = 0
                self._parts = []
                self._decoder = None
                self._inflating = False
            else:
                self._size += length
        else:
            if self._opcode:
                raise FrameError(1002, "expected a continuation frame")
            if compressed:
                payload = self._inflate(payload, bool(fin))
                length = len(payload)
                if opcode == OP_TEXT and (not fin or not payload.isascii()):
                    decoder = _Utf8Decoder()
                    _check_text(decoder, payload, bool(fin))
                    if not fin:
                        self._decoder = decoder
                if not fin:
                    self._inflating = True
            elif checked:  # a text frame, checked already as it came (see _stream)
                decoder, self._frame_decoder = self._frame_decoder, None
                _check_text(decoder, payload[checked:], bool(fin))
                if not fin:
                    self._decoder = decoder
            elif opcode == OP_TEXT and (not fin or not payload.isascii()):
                decoder = _Utf8Decoder()
                _check_text(decoder, payload, bool(fin))
                if not fin:
                    self._decoder = decoder
            if fin:
                events.append((opcode, payload))
            else:
                self._opcode = opcode
                self._size = length
                self._parts = [payload]
        return False

    def _inflate(self, payload: bytes, fin: bool) -> bytes:
        """Inflate one frame of a compressed message: at most the bytes ``max_size`` leaves (1009 past them)."""
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-self._window_bits)
        room = self._max_size - self._size  # inflated bytes the message may still have
        cap = room + 1 if room < _SSIZE_MAX else _SSIZE_MAX  # one more than allowed: zlib stops there
        try:
            data: bytes = inflater.decompress(payload, cap)
            if fin and len(data) <= room:
                # The 4 bytes the sender took off (RFC 7692 7.2.2) end the message's last block.
                tail = inflater.decompress(_DEFLATE_TAIL, cap - len(data))
                if tail:
                    data += tail
        except zlib.error:
            raise FrameError(1002, "invalid compressed data (permessage-deflate)") from None
        if len(data) > room or inflater.unconsumed_tail:
            raise FrameError(1009, f"compressed message inflates past max_size ({self._max_size} bytes)")
        if fin and (self._no_context_takeover or inflater.eof):
            self._inflater = None  # the peer starts its next message afresh (a final block ends the stream)
        return data


_DEFLATE_TAIL = b"\x00\x00\xff\xff"


def _window_bits(value: Any) -> int:
    """``window_bits`` of FrameParser, as both twins read it: 0 (no compression) to 15; 1 to 7 read as 8.

    RFC 7692 windows are 8 to 15 bits; a raw deflate stream has no smaller one,
    so an inflater of 8 bits reads whatever a peer could send with fewer.
    """
    bits = _limit(value)
    if not 0 <= bits <= 15:
        raise ValueError(f"window_bits must be between 0 and 15, not {bits}")
    return 8 if 0 < bits < 8 else bits


def _check_text(decoder: Any, payload: bytes, final: bool) -> None:
    try:
        decoder.decode(payload, final)
    except UnicodeDecodeError:
        raise FrameError(1007, "invalid UTF-8 in a text message") from None
