"""What one side exposes to the other: ``RpcMethodsBase`` and its helpers.

Public methods of a subclass are callable by the peer; a name that starts with
``_`` never is, whatever it is. ``async def`` methods run on the event loop;
plain ``def`` methods run in a worker thread (``asyncio.to_thread``), as FastAPI
does for sync endpoints, so a blocking one cannot stall every connection. Keep
helpers private with a leading underscore. The set of exposed names is worked
out once per class, not per call.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional

from pydantic import BaseModel, Field

from .errors import RpcInvalidStateError

if TYPE_CHECKING:
    from .channel import RpcChannel

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
        self._channel: Optional[RpcChannel] = None

    def _set_channel_(self, channel: RpcChannel) -> None:
        self._channel = channel

    @property
    def channel(self) -> RpcChannel:
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


class ProcessDetails(BaseModel):
    """Who answers: the process id, its command line and working directory (for diagnostics)."""

    pid: int = Field(default_factory=os.getpid)
    cmd: List[str] = Field(default_factory=lambda: list(sys.argv))
    workingdir: str = Field(default_factory=os.getcwd)


class RpcUtilityMethods(RpcMethodsBase):
    """Helpers for testing and diagnostics, as in ``fastapi-ws-rpc``."""

    async def get_process_details(self) -> ProcessDetails:
        """The answering process's details (which worker, which host)."""
        return ProcessDetails()

    async def call_me_back(self, method_name: str = "", args: Optional[Dict[str, Any]] = None) -> str:
        """Call ``method_name`` on the caller without waiting; answer the call id to collect later."""
        channel = self.channel
        promise = channel.async_call(method_name, args or {})
        return str(promise.call_id)

    async def get_response(self, call_id: str = "") -> Any:
        """The answer to a ``call_me_back`` call (waiting for it if needed), once."""
        channel = self.channel
        promise = channel.get_saved_promise(call_id)
        if promise is None:
            return None
        try:
            response = await asyncio.shield(promise.wait())
        finally:
            channel.clear_saved_call(call_id)
        return {"jsonrpc": "2.0", "id": response.id, "result": response.result}

    async def echo(self, text: str) -> str:
        """Answers ``text`` unchanged: a round trip with a payload."""
        return text
