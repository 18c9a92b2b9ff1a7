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
