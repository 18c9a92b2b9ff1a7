"""The sans-I/O JSON-RPC 2.0 core: message types and encoders.

Nothing here knows about asyncio or sockets. Incoming frames become typed
messages in ``decode`` / ``classify``, which live in the accelerated twin
(``_speedups`` compiled, ``_speedups_py`` pure) and are exported from the package
as ``fastwsrpc.decode`` and ``fastwsrpc.classify``; outgoing messages are built here.

Wire format, exactly as jsonrpc.org/specification says:

* request ``{"jsonrpc":"2.0","method":"add","params":{"a":1},"id":7}``
* notification: a request without ``id``; never answered
* response: ``id`` plus exactly one of ``result`` / ``error``
* batch: an array of the above

Two deliberate leniencies on input, both for interoperability: ``"params": null``
is read as no params, and a response that carries neither ``result`` nor
``error`` (``fastapi-ws-rpc`` sends that when a method returns ``None``) is read
as ``result: null``.

Two limits on input, both answered with an error rather than raised: a string id
longer than ``MAX_ID_LENGTH``, and a frame nested deeper than ``max_depth``
(128 unless the caller says otherwise) levels, which is refused before the JSON parser
sees it.
"""

from __future__ import annotations

from typing import Any, List, Optional, Union

import msgspec

__all__ = [
    "MAX_ID_LENGTH",
    "Batch",
    "ErrorObject",
    "Invalid",
    "Message",
    "Notification",
    "Request",
    "Response",
    "encode",
    "encode_batch",
    "encode_error",
    "encode_notification",
    "encode_request",
    "encode_result",
]

#: Longest string id we accept; longer ones are refused as Invalid Request so a
#: peer cannot make us hold (and echo) arbitrarily large keys.
MAX_ID_LENGTH = 256

#: What an id may be. The spec discourages fractional numbers but allows them,
#: so a peer's ``1.5`` is echoed as ``1.5`` rather than refused; booleans are
#: not ids (the classifiers check ``type(x) is int``, not isinstance).
Id = Union[str, int, float, None]


class ErrorObject(msgspec.Struct, gc=False):
    """The ``error`` member of a response."""

    code: int
    message: str
    data: Any = None


class Request(msgspec.Struct, gc=False):
    """A call that expects an answer. ``params`` is a dict, a list, or ``None``."""

    method: str
    params: Any
    id: Id


class Notification(msgspec.Struct, gc=False):
    """A call that is never answered."""

    method: str
    params: Any


class Response(msgspec.Struct, gc=False):
    """An answer. This very object is what ``await channel.call(...)`` returns."""

    id: Id
    result: Any = None
    error: Optional[ErrorObject] = None

    @property
    def jsonrpc(self) -> str:
        """Always ``"2.0"`` (kept for code that reads it as fastapi-ws-rpc's model had it)."""
        return "2.0"


class Invalid(msgspec.Struct, gc=False):
    """A frame (or batch item) that must be answered with this error."""

    id: Id
    code: int
    message: str


class Batch(msgspec.Struct, gc=False):
    """An array of messages; each item is one of the other message types."""

    items: List[Any]


Message = Union[Request, Notification, Response, Invalid, Batch]


def _enc_hook(obj: Any) -> Any:
    """Types msgspec does not encode natively: pydantic models (v2 and v1)."""
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    legacy = getattr(obj, "dict", None)
    if legacy is not None and hasattr(obj, "__fields__"):
        return legacy()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
#: Encode any value our way (msgspec, with pydantic support); returns bytes.
encode = _encoder.encode
#: What :func:`encode` raises for a value that is not JSON (a method's result, a stream's item, a publication).
ENCODE_ERRORS = (TypeError, ValueError, OverflowError, msgspec.EncodeError)


def encode_request(call_id: Id, method: str, params: Any = None) -> bytes:
    if params is None:
        return _encoder.encode({"jsonrpc": "2.0", "method": method, "id": call_id})
    return _encoder.encode({"jsonrpc": "2.0", "method": method, "params": params, "id": call_id})


def encode_notification(method: str, params: Any = None) -> bytes:
    if params is None:
        return _encoder.encode({"jsonrpc": "2.0", "method": method})
    return _encoder.encode({"jsonrpc": "2.0", "method": method, "params": params})


def encode_result(call_id: Id, result: Any) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "id": call_id, "result": result})


def encode_error(call_id: Id, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": int(code), "message": message}
    if data is not None:
        error["data"] = data
    return _encoder.encode({"jsonrpc": "2.0", "id": call_id, "error": error})


def encode_batch(parts: List[bytes]) -> bytes:
    """Join already-encoded messages into one array frame, without re-encoding them."""
    return b"[" + b",".join(parts) + b"]"


# ---------------------------------------------------------------- the sans-I/O connection
#: Our ``$/`` extensions: cancellation (LSP's name), call metadata, and streams.
CANCEL_REQUEST = "$/cancelRequest"
META = "$/meta"
STREAM_ITEM = "$/stream.item"
STREAM_END = "$/stream.end"
STREAM_CREDIT = "$/stream.credit"
STREAM_CANCEL = "$/stream.cancel"
#: All of them: a set lookup tells an ordinary notification from ours without slicing its name.
CONTROL_METHODS = frozenset({CANCEL_REQUEST, META, STREAM_ITEM, STREAM_END, STREAM_CREDIT, STREAM_CANCEL})

_JSONRPC_INVALID_REQUEST = -32600
#: Frames longer than this are checked for an oversized batch before they are decoded.
_BIG_FRAME = 64 * 1024
#: Decodes a batch's items as raw JSON slices: counts them without building them.
_count_items = msgspec.json.Decoder(List[msgspec.Raw]).decode


class CancelRequest:
    """``$/cancelRequest``: the peer gave up on its call ``id`` (LSP's convention)."""

    __slots__ = ("id",)

    def __init__(self, call_id: Id) -> None:
        self.id = call_id


class MetaNotice:
    """``$/meta``: metadata (trace context) of the call ``id`` that follows."""

    __slots__ = ("id", "meta")

    def __init__(self, call_id: Id, meta: Any) -> None:
        self.id = call_id
        self.meta = meta


class StreamItem:
    """``$/stream.item``: one item of stream ``stream`` the peer produces."""

    __slots__ = ("item", "stream")

    def __init__(self, stream: Id, item: Any) -> None:
        self.stream = stream
        self.item = item


class StreamEnd:
    """``$/stream.end``: the stream is over; ``error`` if it failed, ``malformed`` if its error was unreadable."""

    __slots__ = ("error", "malformed", "stream")

    def __init__(self, stream: Id, error: Optional[ErrorObject], malformed: bool = False) -> None:
        self.stream = stream
        self.error = error
        self.malformed = malformed


class StreamCredit:
    """``$/stream.credit``: the consumer grants ``credits`` more items, or a ``window`` from the start."""

    __slots__ = ("credits", "stream", "window")

    def __init__(self, stream: Id, credits: int, window: bool) -> None:
        self.stream = stream
        self.credits = credits
        self.window = window


class StreamCancel:
    """``$/stream.cancel``: the consumer stopped stream ``stream``."""

    __slots__ = ("stream",)

    def __init__(self, stream: Id) -> None:
        self.stream = stream


class ProtocolError:
    """A frame that must be answered with an error and nothing else; ``frame`` is that answer."""

    __slots__ = ("frame",)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame


#: What :meth:`RpcProtocol.receive` returns: a message to act on, a control event, or None (nothing to do).
Event = Union[
    Request,
    Notification,
    Response,
    Batch,
    CancelRequest,
    MetaNotice,
    StreamItem,
    StreamEnd,
    StreamCredit,
    StreamCancel,
    ProtocolError,
    None,
]


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, int, float)) or value is None


class RpcProtocol:
    """One connection's JSON-RPC 2.0 protocol, sans I/O: frames in, events out.

    No asyncio and no socket: ``receive`` takes one text frame and returns what
    it means (h11's and websockets' ``protocol.py`` are the model). Ordinary
    messages come out as the decoded ``Request`` / ``Notification`` /
    ``Response`` / ``Batch`` themselves (no extra object on the hot path); our
    ``$/`` control notifications come out as small typed events whose params
    have been checked; what must be answered with an error (a parse error, an
    invalid request, a batch over ``max_batch_size``) comes out as a
    ``ProtocolError`` carrying the frame to send. A malformed control message is
    that message's fault: it yields None, never an exception. Only an oversized
    frame raises (``RpcMessageTooLargeError``): the connection must close (1009).
    """

    __slots__ = ("_decode", "max_batch_size", "max_depth", "max_message_size")

    def __init__(self, impl: Any, max_message_size: int, max_depth: int, max_batch_size: int) -> None:
        self._decode = impl.decode
        self.max_message_size = max_message_size
        self.max_depth = max_depth
        self.max_batch_size = max_batch_size

    def receive(self, frame: Union[str, bytes]) -> Event:
        """What one received frame means (see the class docstring)."""
        if len(frame) > _BIG_FRAME:
            refusal = self._batch_too_big(frame)
            if refusal is not None:
                return refusal
        return self.event_of(self._decode(frame, self.max_message_size, self.max_depth))

    def event_of(self, msg: Any) -> Event:
        """What one decoded message means (``receive`` after its decode; the channel's fast path uses it)."""
        kind = type(msg)
        if kind is Notification:
            if msg.method[:2] == "$/":
                return self._control(msg)
            return msg  # type: ignore[no-any-return]
        if kind is Invalid:
            return ProtocolError(encode_error(msg.id, msg.code, msg.message))
        if kind is Batch and len(msg.items) > self.max_batch_size:
            return self._batch_refusal(len(msg.items))
        return msg  # type: ignore[no-any-return]

    def _batch_refusal(self, count: int) -> ProtocolError:
        limit = self.max_batch_size
        message = f"Invalid Request: batch of {count} items, the limit is {limit}"
        return ProtocolError(encode_error(None, _JSONRPC_INVALID_REQUEST, message))

    def _batch_too_big(self, frame: Union[str, bytes]) -> Optional[ProtocolError]:
        """A long frame that is a batch of more than ``max_batch_size`` items: refused undecoded.

        Decoding it first would build every item (100,000 small calls in 7.8 MB
        made +80 MB at peak) only to refuse them all; counting raw items costs
        a few bytes each. Anything unusual falls through to the ordinary decode,
        which answers it.
        """
        start = frame.lstrip()[:1]
        if start != "[" and start != b"[":
            return None
        try:
            count = len(_count_items(frame))
        except Exception:
            return None
        return self._batch_refusal(count) if count > self.max_batch_size else None

    def _control(self, msg: Notification) -> Event:
        """A ``$/`` notification as its event; None if malformed; the message itself if not ours."""
        method = msg.method
        params = msg.params
        if method == CANCEL_REQUEST:
            call_id = params.get("id") if isinstance(params, dict) else (params[0] if params else None)
            return CancelRequest(call_id) if _is_id(call_id) else None
        if method == STREAM_ITEM:
            if isinstance(params, dict) and _is_id(params.get("stream")):
                return StreamItem(params.get("stream"), params.get("item"))
            return None
        if method == STREAM_CREDIT:
            if not isinstance(params, dict) or not _is_id(params.get("stream")):
                return None
            window = params.get("window")
            credits = window if window is not None else params.get("credits")
            if type(credits) is not int or credits < 0:
                return None
            return StreamCredit(params.get("stream"), credits, window is not None)
        if method == STREAM_END:
            if not isinstance(params, dict) or not _is_id(params.get("stream")):
                return None
            error = params.get("error")
            if error is None:
                return StreamEnd(params.get("stream"), None)
            code = error.get("code") if isinstance(error, dict) else None
            if type(code) is not int:
                return StreamEnd(params.get("stream"), None, malformed=True)
            return StreamEnd(params.get("stream"), ErrorObject(code, str(error.get("message", "")), error.get("data")))
        if method == STREAM_CANCEL:
            if isinstance(params, dict) and _is_id(params.get("stream")):
                return StreamCancel(params.get("stream"))
            return None
        if method == META:
            if isinstance(params, dict) and _is_id(params.get("id")) and isinstance(params.get("meta"), dict):
                return MetaNotice(params["id"], params["meta"])
            return None
        return msg  # a "$/" method that is not ours: an ordinary notification
