"""Exceptions, and their mapping to and from JSON-RPC 2.0 error codes.

The names are those of ``fastapi-ws-rpc`` 1.x so that ``except`` clauses written
against it keep working. On top of them, every error that arrives from the other
side is a :class:`RemoteValueError` carrying the remote ``code``, ``message`` and
``data``; the standard codes get a subclass each, so callers can catch exactly
what they care about.

A method may raise any of the remote error classes itself (for example
``raise RemoteValueError("insufficient funds", code=-32010)``): the other side
then receives that code and message, and raises the same class.

The tree (``except RpcError`` catches everything this library raises)::

    RpcError                                  .code / .message / .data (None, "", None unless remote)
    +-- RpcChannelClosedError                 the connection closed before the answer
    |   +-- RpcNotConnectedError              (also an RpcInvalidStateError) called while not connected
    +-- RpcInvalidStateError                  e.g. a call before ``async with``
    +-- RpcConnectionError (ConnectionError)  could not connect: refused, DNS, TLS, timeout
    |   +-- RpcHandshakeRejectedError         HTTP status at the handshake (.status: 401/403 vs 404)
    +-- RpcUsageError (ValueError)            a wrong call, e.g. a URL that is not ws:// or wss://
    +-- RpcMessageTooLargeError               over max_message_size
    +-- RpcBackpressureError                  too many of our own calls pending
    +-- RpcTimeoutError (asyncio.TimeoutError) no answer in time
    +-- RpcClientNotFoundError                cluster: no such client id on any node
    +-- RpcBrokerUnavailableError             cluster: Redis/NATS unreachable right now
    +-- RpcDuplicateClientError               cluster: the id is taken (on_duplicate="reject")
    +-- TransportClosed                       (transport.py) the socket closed; .code, .reason
    +-- RemoteValueError                      the other side answered with a JSON-RPC error
        +-- RpcParseError                     -32700
        +-- RpcInvalidRequestError            -32600
        +-- UnknownMethodError                -32601
        +-- RpcInvalidParamsError             -32602
        +-- RpcInternalError                  -32603
        +-- RpcServerOverloadedError          -32001
"""

from __future__ import annotations

import asyncio
from enum import IntEnum
from typing import Any, Optional

from websockets.exceptions import InvalidStatus


class JsonRpcErrorCode(IntEnum):
    """The error codes fixed by the JSON-RPC 2.0 specification."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    #: The first of the range reserved for implementation-defined server errors.
    SERVER_ERROR = -32000
    #: Our choice inside -32000..-32099: the peer has too many calls in flight.
    SERVER_OVERLOADED = -32001


class RpcError(Exception):
    """Base of every exception this library raises.

    ``code``, ``message`` and ``data`` are declared here so that code (and
    mypy) can read them from any ``RpcError``; only remote errors set them.
    """

    #: The JSON-RPC error code, for errors that carry one (remote errors).
    code: Optional[int] = None
    #: The JSON-RPC error message, for errors that carry one.
    message: str = ""
    #: The JSON-RPC error's ``data`` member, if any.
    data: Any = None


class RpcChannelClosedError(RpcError):
    """The channel is closed, or closed while the call was waiting for its answer."""


class RpcInvalidStateError(RpcError):
    """An operation was attempted in a state that does not allow it (not yet open, closed)."""


class RpcNotConnectedError(RpcChannelClosedError, RpcInvalidStateError):
    """A call was made on a channel that is not open.

    Both an :class:`RpcChannelClosedError` and an :class:`RpcInvalidStateError`,
    so code that catches either (as ``fastapi-ws-rpc`` users do) sees it.
    """


class RpcConnectionError(RpcError, ConnectionError):
    """Could not connect (refused, unreachable, DNS, TLS); the cause is chained as ``__cause__``."""


class RpcHandshakeRejectedError(RpcConnectionError, InvalidStatus):
    """The server answered the WebSocket handshake with an HTTP error status.

    ``status`` tells an authentication refusal (401, 403) from a wrong path (404).
    It is also a ``websockets`` ``InvalidStatus`` (with ``.response.status_code``),
    which is what fastapi-ws-rpc 1.2 raised, so its users' ``except`` clauses hold.
    """

    def __init__(self, status: int, message: str = "", response: Any = None) -> None:
        ConnectionError.__init__(self, message or f"the server refused the WebSocket handshake with HTTP {status}")
        self.status = status
        #: The HTTP response of the refusal (``.status_code``, ``.headers``, ``.body``), when known.
        self.response = response


class RpcUsageError(RpcError, ValueError):
    """The library was called wrongly (a bad URL, say): fix the call; never retried."""


class RpcClientNotFoundError(RpcError):
    """No connection under that client id on any node of the cluster."""


class RpcBrokerUnavailableError(RpcError):
    """The cluster's broker (Redis, NATS) cannot be reached right now; retry later."""


class RpcDuplicateClientError(RpcError):
    """A client id is already connected and the endpoint refuses duplicates (``on_duplicate="reject"``)."""


class RpcMessageTooLargeError(RpcError):
    """A message is larger than the configured ``max_message_size``."""


class RpcBackpressureError(RpcError):
    """Too many calls are pending on this channel; slow down or raise the limit."""


class RpcTimeoutError(RpcError, asyncio.TimeoutError):
    """No answer arrived within the call's timeout.

    It is also an :class:`asyncio.TimeoutError` because that is what
    ``fastapi-ws-rpc`` raised, and code written against it catches that.
    """


class RemoteValueError(RpcError):
    """The other side answered with a JSON-RPC error.

    Raise it (or a subclass) from a method to answer with a chosen code.
    """

    default_code: int = JsonRpcErrorCode.SERVER_ERROR
    code: int

    def __init__(
        self,
        message: str = "",
        code: Optional[int] = None,
        data: Any = None,
        response: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = int(code) if code is not None else int(self.default_code)
        self.data = data
        #: The :class:`~fastwsrpc.protocol.Response` that carried the error, if any.
        self.response = response

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class RpcParseError(RemoteValueError):
    """The other side could not parse what we sent as JSON (-32700)."""

    default_code = JsonRpcErrorCode.PARSE_ERROR


class RpcInvalidRequestError(RemoteValueError):
    """What we sent was JSON but not a valid JSON-RPC request (-32600)."""

    default_code = JsonRpcErrorCode.INVALID_REQUEST


class UnknownMethodError(RemoteValueError):
    """The method does not exist on the other side (-32601)."""

    default_code = JsonRpcErrorCode.METHOD_NOT_FOUND


class RpcInvalidParamsError(RemoteValueError):
    """The params did not fit the method's signature or types (-32602)."""

    default_code = JsonRpcErrorCode.INVALID_PARAMS


class RpcInternalError(RemoteValueError):
    """The method failed on the other side (-32603); details only in debug mode."""

    default_code = JsonRpcErrorCode.INTERNAL_ERROR


class RpcServerOverloadedError(RemoteValueError):
    """The other side refused the call because it has too many in flight (-32001)."""

    default_code = JsonRpcErrorCode.SERVER_OVERLOADED


_BY_CODE: dict[int, type[RemoteValueError]] = {
    cls.default_code: cls
    for cls in (
        RpcParseError,
        RpcInvalidRequestError,
        UnknownMethodError,
        RpcInvalidParamsError,
        RpcInternalError,
        RpcServerOverloadedError,
    )
}


def error_for_code(code: int, message: str, data: Any = None, response: Any = None) -> RemoteValueError:
    """Build the exception a caller sees for a remote error with this code."""
    cls = _BY_CODE.get(code, RemoteValueError)
    return cls(message, code=code, data=data, response=response)
