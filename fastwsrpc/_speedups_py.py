"""Pure-Python twin of ``_speedups.pyx``: the per-message hot path.

Same names, signatures, results and exceptions as the compiled module (the
contract is written down in ``_speedups.pyi``); ``tests/test_speedups.py`` feeds
both the same inputs, malformed ones included, and compares what comes out.
Change one, change the other.
"""

from __future__ import annotations

import math
from array import array
from asyncio import InvalidStateError
from itertools import accumulate
from typing import Any, Callable, Dict, Hashable, List, Union

import msgspec

from .errors import RpcBackpressureError, RpcMessageTooLargeError, RpcTimeoutError
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
    if obj.get("jsonrpc") != "2.0":
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

    __slots__ = ("_deadlines", "_futures", "_next_id", "max_pending")

    def __init__(self, max_pending: int) -> None:
        # Keyed by Any rather than Hashable: lookups accept any object (see above).
        self._futures: Dict[Any, Any] = {}
        self._deadlines: Dict[Any, float] = {}
        self._next_id = 0
        self.max_pending = max_pending

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _full(self) -> RpcBackpressureError:
        return RpcBackpressureError(
            f"{len(self._futures)} calls are pending, the limit is {self.max_pending}; "
            "wait for some to finish or raise max_pending_requests"
        )

    def register(self, future: Any, deadline: float = _INF) -> int:
        """Allocate the next id and add ``future`` under it: one call per outgoing request."""
        futures = self._futures
        if len(futures) >= self.max_pending:
            raise self._full()
        self._next_id += 1
        call_id = self._next_id
        futures[call_id] = future
        if deadline != _INF:
            self._deadlines[call_id] = deadline
        return call_id

    def add(self, call_id: Hashable, future: Any, deadline: float = _INF) -> None:
        """Add ``future`` under an id chosen by the caller (``async_call(call_id=...)``)."""
        if len(self._futures) >= self.max_pending:
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
