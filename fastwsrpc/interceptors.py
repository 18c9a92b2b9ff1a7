"""Interceptors: code that sees every call, both ways, before and after it runs.

An interceptor wraps calls the way ASGI middleware wraps requests: it receives the
call and a ``proceed`` coroutine function, and returns what ``proceed()`` returns
(or raises). It may look at the call (method, params, id, the connection's
context), refuse it by raising a :class:`~fastwsrpc.errors.RemoteValueError`
(the caller receives that JSON-RPC error), change ``call.meta``, time it, log it,
trace it::

    class Audit(RpcInterceptor):
        async def incoming(self, call, proceed):
            if call.method.startswith("admin_") and not call.context.get("is_admin"):
                raise RemoteValueError("forbidden", code=-32010)
            return await proceed()

    WebSocketRpcEndpoint(methods, interceptors=[Audit(), OpenTelemetryInterceptor()])

The list is ordered: the first interceptor is the outermost. Incoming calls and
notifications go through ``incoming`` (``proceed()`` returns the method's result;
the method's exception comes out of it); outgoing calls and notifications through
``outgoing`` (``proceed()`` returns the :class:`~fastwsrpc.protocol.Response`).
With no interceptor installed nothing of this runs: the channel checks one
attribute per call.

``call.meta`` travels with a call to the other side when both sides declared the
same ``features`` in the WebSocket handshake (the ``x-fastwsrpc-features`` header):
it goes as a ``$/meta`` notification just before the request, so a plain JSON-RPC
peer never sees it. Tracing uses it for W3C trace context.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, FrozenSet, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from .conversation import Conversation

#: The handshake header that lists the features a side understands (comma-separated).
FEATURES_HEADER = "x-fastwsrpc-features"
#: The token of the features header that advertises the server's ``max_pending_requests``.
MAX_PENDING_TOKEN = "max-pending"
#: The notification carrying a call's ``meta`` just before the call.
META = "$/meta"
#: ``meta`` entries kept for calls not started yet, per connection (a bound on what a peer can park).
MAX_PARKED_META = 1000

Proceed = Callable[[], Awaitable[Any]]


class RpcCall:
    """One call as interceptors see it."""

    __slots__ = ("channel", "id", "meta", "method", "notification", "outgoing", "params")

    def __init__(
        self,
        channel: Conversation,
        method: str,
        params: Any,
        call_id: Any,
        notification: bool,
        outgoing: bool,
        meta: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.channel = channel
        self.method = method
        self.params = params
        #: The JSON-RPC id (``None`` for notifications; for an outgoing call, set once it is sent).
        self.id = call_id
        self.notification = notification
        self.outgoing = outgoing
        #: What travels with the call to a peer that understands it (trace context, say).
        self.meta: Dict[str, Any] = meta if meta is not None else {}

    @property
    def context(self) -> Dict[str, Any]:
        """The connection's context (the FastAPI ``WebSocket``, path parameters, the client id)."""
        return self.channel.context

    def __repr__(self) -> str:
        way = "outgoing" if self.outgoing else "incoming"
        return f"<{way} {'notification' if self.notification else 'call'} {self.method!r} id={self.id!r}>"


class RpcInterceptor:
    """Base class: override ``incoming`` and/or ``outgoing``; both may be async and may refuse."""

    #: Handshake features this interceptor needs from the peer (e.g. ``{"meta"}``).
    features: FrozenSet[str] = frozenset()

    async def incoming(self, call: RpcCall, proceed: Proceed) -> Any:
        """Around a call the other side made to us: return ``await proceed()`` (or raise)."""
        return await proceed()

    async def outgoing(self, call: RpcCall, proceed: Proceed) -> Any:
        """Around a call we make to the other side: return ``await proceed()`` (or raise)."""
        return await proceed()


def run_chain(interceptors: Sequence[RpcInterceptor], call: RpcCall, final: Proceed, outgoing: bool) -> Awaitable[Any]:
    """``final`` inside every interceptor, the first one outermost; await what this returns.

    The chain is built of partials, not of coroutines of its own: an
    interceptor adds one coroutine frame to a call, no more.
    """
    proceed = final
    for interceptor in reversed(interceptors):
        step = interceptor.outgoing if outgoing else interceptor.incoming
        proceed = functools.partial(step, call, proceed)
    return proceed()


def features_of(interceptors: Sequence[RpcInterceptor]) -> FrozenSet[str]:
    """Every feature some interceptor needs."""
    found: FrozenSet[str] = frozenset()
    for interceptor in interceptors:
        found |= interceptor.features
    return found


def parse_features(value: Optional[str]) -> FrozenSet[str]:
    """The features named in a handshake header value."""
    if not value:
        return frozenset()
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip() and "=" not in part)


def format_features(features: FrozenSet[str], max_pending: Optional[int] = None) -> str:
    """The header value: the agreed features, and the limit a server advertises.

    ``max-pending=N`` tells the client how many of its calls the server runs at
    once; our clients keep their calls in flight under it (queueing the rest
    locally), so they never meet -32001. A client that does not know the token
    reads it as a feature nobody asked for and ignores it.
    """
    parts = sorted(features)
    if max_pending is not None:
        parts.append(f"{MAX_PENDING_TOKEN}={max_pending}")
    return ",".join(parts)


def parse_max_pending(value: Optional[str]) -> Optional[int]:
    """The ``max-pending=N`` a server advertised in the features header, if any (and sane)."""
    if not value:
        return None
    for part in value.split(","):
        name, sep, number = part.strip().partition("=")
        if sep and name.strip().lower() == MAX_PENDING_TOKEN and number.strip().isdigit():
            found = int(number.strip())
            return found if found > 0 else None
    return None


def meta_params(call_id: Any, meta: Mapping[str, Any]) -> Dict[str, Any]:
    return {"id": call_id, "meta": dict(meta)}
