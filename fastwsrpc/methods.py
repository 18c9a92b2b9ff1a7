"""What one side exposes to the other: ``RpcMethodsBase`` and its helpers.

Public methods of a subclass are callable by the peer; a name that starts with
``_`` never is, whatever it is. ``async def`` methods run on the event loop;
plain ``def`` methods run in a worker thread (``asyncio.to_thread``), as FastAPI
does for sync endpoints, so a blocking one cannot stall every connection. Keep
helpers private with a leading underscore. The set of exposed names is worked
out once per class, not per call.

fastapi-ws-rpc's helpers ``RpcUtilityMethods`` and its pydantic model
``ProcessDetails`` are defined in :mod:`fastwsrpc.rpc_methods` (their 1.x
home) and resolve from here on first use, so that a program that does not use
them never imports pydantic.
"""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Optional

from .errors import RpcInvalidStateError

if TYPE_CHECKING:
    from .conversation import Conversation
    from .rpc_methods import ProcessDetails as ProcessDetails
    from .rpc_methods import RpcUtilityMethods as RpcUtilityMethods

PING_RESPONSE = "pong"


class NoResponse:
    """Return this class from a method to send no answer at all (as in ``fastapi-ws-rpc``)."""


_exposed_cache: Dict[type, FrozenSet[str]] = {}


def exposed_method_names(cls: type) -> FrozenSet[str]:
    """Names of the methods of ``cls`` the peer may call (public functions, async or not)."""
    names = _exposed_cache.get(cls)
    if names is None:
        found = set()
        for name in dir(cls):
            if name.startswith("_"):
                continue
            attr = inspect.getattr_static(cls, name, None)
            if isinstance(attr, (staticmethod, classmethod)):
                attr = attr.__func__
            if inspect.iscoroutinefunction(attr) or inspect.isfunction(attr):
                found.add(name)
        names = _exposed_cache[cls] = frozenset(found)
    return names


class RpcMethodsBase:
    """Subclass it and add ``async def`` methods; pass an instance to the endpoint or client.

    Each connection gets its own shallow copy (``_copy_``), bound to that
    connection's channel, so ``self.channel`` always talks back to the caller.
    Override ``_copy_`` if per-connection state needs a deeper copy.
    """

    def __init__(self) -> None:
        self._channel: Optional[Conversation] = None

    def _set_channel_(self, channel: Conversation) -> None:
        self._channel = channel

    @property
    def channel(self) -> Conversation:
        """The channel of the connection this call came in on.

        Never ``None`` inside a method the peer called (so ``self.channel.other.x()``
        type-checks as it is); outside one, on the template object given to the
        endpoint or client, it raises ``RpcInvalidStateError`` saying so.
        """
        channel = getattr(self, "_channel", None)
        if channel is None:
            raise RpcInvalidStateError(
                f"{type(self).__name__}.channel is only set on the per-connection copy that handles calls; "
                "this object is not bound to a connection"
            )
        return channel  # type: ignore[no-any-return]

    @property
    def bound(self) -> bool:
        """Whether this object serves a connection (``self.channel`` is usable)."""
        return getattr(self, "_channel", None) is not None

    def _copy_(self) -> RpcMethodsBase:
        return copy.copy(self)

    async def ping(self) -> str:
        """Answers ``"pong"``; the RPC-level keepalive calls it."""
        return PING_RESPONSE


if not TYPE_CHECKING:  # hidden from mypy, which would otherwise type any misspelt name as Any

    def __getattr__(name: str) -> Any:
        """PEP 562: ``RpcUtilityMethods`` and ``ProcessDetails`` import pydantic, so only when named."""
        if name in ("ProcessDetails", "RpcUtilityMethods"):
            from . import rpc_methods

            value = getattr(rpc_methods, name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
