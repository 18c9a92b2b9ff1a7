"""``fastapi_ws_rpc.simplewebsocket``, under fastwsrpc: names kept so imports keep working.

fastapi-ws-rpc wraps each socket in a serializing layer (``SimpleWebSocket``,
``JsonSerializingWebSocket``, ``SerializingSocketProtocol``). fastwsrpc has no
such layer: it encodes JSON-RPC 2.0 itself (one msgspec encode per message),
and a channel needs only the three coroutines of
:class:`fastwsrpc.transport.Transport` from a socket.

The names still import, because 1.x code passes them along without using them
(``serializing_socket_cls=JsonSerializingWebSocket``, which the client accepts
and ignores with a warning). Instantiating or subclassing one raises a
``TypeError`` that says what to do instead: failing at the point of use, with
that message, is kinder than an import error far from it.
"""

from __future__ import annotations

from typing import Any

from .config import DEFAULT_MAX_MESSAGE_SIZE

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "JsonSerializingWebSocket", "SerializingSocketProtocol", "SimpleWebSocket"]

_ADVICE = (
    "fastwsrpc has no socket serialization layer: it speaks JSON-RPC 2.0 itself and ignores the "
    "client's serializing_socket_cls. To carry a channel over another kind of socket, implement "
    "fastwsrpc.transport.Transport (send, receive, close)."
)


class _NotCarriedOver:
    """A fastapi-ws-rpc socket class that fastwsrpc keeps as a name only."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__bases__ != (_NotCarriedOver,):  # the placeholders below are the only direct subclasses
            raise TypeError(f"cannot subclass {cls.__bases__[0].__name__}: {_ADVICE}")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"cannot create a {type(self).__name__}: {_ADVICE}")


class SimpleWebSocket(_NotCarriedOver):
    """Not in fastwsrpc: see the module's docstring."""


class JsonSerializingWebSocket(_NotCarriedOver):
    """Not in fastwsrpc: see the module's docstring."""


class SerializingSocketProtocol(_NotCarriedOver):
    """Not in fastwsrpc: see the module's docstring."""
