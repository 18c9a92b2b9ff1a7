"""Pure-Python twin of ``_speedups.pyx``: the per-message hot path.

Same names, signatures, results and exceptions as the compiled module (the
contract is written down in ``_speedups.pyi``); ``tests/test_speedups.py`` feeds
both the same inputs, malformed ones included, and compares what comes out.
Change one, change the other.
"""

from __future__ import annotations

from asyncio import InvalidStateError
from typing import Any, Callable, Dict, Hashable, List, Union

import msgspec

from .errors import RpcBackpressureError, RpcMessageTooLargeError, RpcTimeoutError
from .protocol import (
    MAX_ID_LENGTH,
    Batch,
    ErrorObject,
    Invalid,
    Message,
    Notification,
    Request,
    Response,
)

_json_decode = msgspec.json.Decoder().decode
_DecodeError = msgspec.DecodeError
_MISSING: Any = object()

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
INF = float("inf")


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
    """Why ``value`` cannot be a JSON-RPC id, or ``""`` when it can."""
    t = type(value)
    if t is int or value is None:
        return ""
    if t is str:
        if len(value) > MAX_ID_LENGTH:
            return f"Invalid Request: id longer than {MAX_ID_LENGTH} characters"
        return ""
    return "Invalid Request: id must be a string, an integer or null"


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


def decode(frame: Union[str, bytes], max_size: int) -> Message:
    """Size check, one JSON decode, classification: the whole per-frame path."""
    check_size(frame, max_size)
    try:
        obj = _json_decode(frame)
    except _DecodeError:
        return Invalid(None, PARSE_ERROR, "Parse error")
    return classify(obj)


class PendingTable:
    """Outgoing calls waiting for their answer, by id.

    Futures by id, and deadlines (``loop.time()`` based) only for entries that
    have one: a call with a timeout is timed out by its own timer, so most
    entries carry none and cost one dict slot. Every operation is O(1) but
    ``expire`` and ``fail_all``, which run on a timer and at close; nothing is
    kept once an entry resolves.
    """

    __slots__ = ("_deadlines", "_futures", "_next_id", "max_pending")

    def __init__(self, max_pending: int) -> None:
        self._futures: Dict[Hashable, Any] = {}
        self._deadlines: Dict[Hashable, float] = {}
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

    def register(self, future: Any, deadline: float = INF) -> int:
        """Allocate the next id and add ``future`` under it: one call per outgoing request."""
        futures = self._futures
        if len(futures) >= self.max_pending:
            raise self._full()
        self._next_id += 1
        call_id = self._next_id
        futures[call_id] = future
        if deadline != INF:
            self._deadlines[call_id] = deadline
        return call_id

    def add(self, call_id: Hashable, future: Any, deadline: float = INF) -> None:
        """Add ``future`` under an id chosen by the caller (``async_call(call_id=...)``)."""
        if len(self._futures) >= self.max_pending:
            raise self._full()
        if call_id in self._futures:
            raise ValueError(f"call id {call_id!r} is already pending")
        self._futures[call_id] = future
        if deadline != INF:
            self._deadlines[call_id] = deadline

    def resolve(self, call_id: Hashable, response: Any) -> bool:
        future = self._futures.pop(call_id, None)
        if future is None:
            return False
        if self._deadlines:
            self._deadlines.pop(call_id, None)
        try:
            future.set_result(response)
        except InvalidStateError:  # the waiter was cancelled meanwhile
            pass
        return True

    def fail(self, call_id: Hashable, exc: BaseException) -> bool:
        future = self._futures.pop(call_id, None)
        if future is None:
            return False
        if self._deadlines:
            self._deadlines.pop(call_id, None)
        try:
            future.set_exception(exc)
        except InvalidStateError:
            pass
        return True

    def discard(self, call_id: Hashable) -> bool:
        if self._deadlines:
            self._deadlines.pop(call_id, None)
        return self._futures.pop(call_id, None) is not None

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
        return call_id in self._futures
