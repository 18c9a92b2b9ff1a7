"""Incoming calls: method lookup, binding, typed params, discovery, and how failures are answered.

One :class:`Dispatcher` per channel turns ``(method, params, id)`` into the
encoded answer. It knows nothing of the read loop or of budgets: the channel
decides when a call may start, the dispatcher only runs it. Handlers are looked
up once per method name and per connection, then kept.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, FrozenSet, Optional, Sequence, Tuple, Type, cast

from ._version import __version__
from .budget import Budget
from .config import RpcSettings
from .errors import JsonRpcErrorCode, RemoteValueError
from .interceptors import MAX_PARKED_META, RpcCall, RpcInterceptor, run_chain
from .logger import get_logger
from .methods import NoResponse, RpcMethodsBase, exposed_method_names
from .protocol import ENCODE_ERRORS, encode_error, encode_result
from .topics import SUBSCRIBE
from .typed import method_spec, openrpc_document, typed_handler

if TYPE_CHECKING:
    from .conversation import Conversation

logger = get_logger("dispatch")

#: OpenRPC's discovery method (``rpc.`` names are reserved for this by JSON-RPC 2.0).
DISCOVER = "rpc.discover"

#: fastapi-ws-rpc's built-in: the other side asks for this connection's channel id.
GET_CHANNEL_ID = "_get_channel_id_"


Handler = Callable[..., Awaitable[Any]]

#: The handlers of a connection that has had no call yet: an empty mapping, shared (reads only).
_NO_HANDLERS = cast(Dict[str, Handler], MappingProxyType({}))

#: The stream names of each methods class, with and without a topic hub: one frozenset
#: shared by every connection (a set per connection was 216 bytes of an idle one).
_stream_names: Dict[Tuple[Type[Any], bool], FrozenSet[str]] = {}


def stream_names_of(cls: Type[Any], topics: bool) -> FrozenSet[str]:
    """The methods of ``cls`` that stream (async generators), and ``$/subscribe`` when a hub serves topics."""
    names = _stream_names.get((cls, topics))
    if names is None:
        names = frozenset(
            name for name in exposed_method_names(cls) if inspect.isasyncgenfunction(getattr(cls, name, None))
        )
        names = _stream_names[(cls, topics)] = names | {SUBSCRIBE} if topics else names
    return names


def _params_bind(handler: Callable[..., Any], params: Any) -> bool:
    """Whether ``params`` fit the handler's signature (asked only after a TypeError)."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        return True
    try:
        if params is None:
            sig.bind()
        elif isinstance(params, dict):
            sig.bind(**params)
        else:
            sig.bind(*params)
    except TypeError:
        return False
    return True


def _in_thread(func: Callable[..., Any]) -> Handler:
    """A plain ``def`` method, run in a worker thread so that it cannot block the loop."""

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(func, *args, **kwargs)

    return run


def _not_in_a_batch(name: str) -> Handler:
    """A stream method reached through a batch, where a stream cannot be answered."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RemoteValueError(
            f"Invalid Request: {name} is a stream; call it on its own, not in a batch",
            code=JsonRpcErrorCode.INVALID_REQUEST,
        )

    return refuse


class Dispatcher:
    """Runs the methods one side exposes and encodes their answers."""

    __slots__ = (
        "_budget",
        "_channel",
        "_exposed",
        "_handlers",
        "_interceptors",
        "_on_internal_error",
        "_parked",
        "_topics",
        "debug_mode",
        "discovery",
        "methods",
        "stream_names",
    )

    def __init__(
        self,
        methods: RpcMethodsBase,
        settings: RpcSettings,
        on_internal_error: Callable[[Exception], None],
        topics: Any = None,
        interceptors: Sequence[RpcInterceptor] = (),
        channel: Optional[Conversation] = None,
        budget: Optional[Budget] = None,
    ) -> None:
        self.methods = methods
        self.discovery = settings.discovery
        self.debug_mode = settings.debug_mode
        self._on_internal_error = on_internal_error
        self._exposed: FrozenSet[str] = exposed_method_names(type(methods))
        #: Handlers by name, built on each name's first call: a dict from the first (none on an idle connection).
        self._handlers: Dict[str, Handler] = _NO_HANDLERS
        #: Methods written as async generators: each call is a stream (see streams.py).
        self._interceptors: Tuple[RpcInterceptor, ...] = tuple(interceptors)
        self._channel = channel
        #: The ``$/meta`` of calls not started yet, by id: ``(meta, bytes)``, in the budget (made on the first).
        self._parked: Optional[Dict[Any, Tuple[Any, int]]] = None
        self._budget = budget
        #: The topic hub whose ``$/subscribe`` stream this side serves (the library's own stream), or None.
        self._topics = topics
        self.stream_names: FrozenSet[str] = stream_names_of(type(methods), topics is not None)

    def park_meta(self, call_id: Any, meta: Any, size: int) -> None:
        """The meta of the call that follows (trace context), for interceptors: kept, in the budget, until it starts."""
        parked, budget = self._parked, self._budget
        if not self._interceptors or budget is None or not budget.fits(size):
            return
        if parked is None:
            parked = self._parked = {}
        if len(parked) < MAX_PARKED_META and call_id not in parked:
            parked[call_id] = (meta, size)
            budget.held += size

    def _take_meta(self, call_id: Any) -> Any:
        """The meta parked for ``call_id`` (its bytes leave the budget), or None."""
        parked = self._parked.pop(call_id, None) if self._parked is not None and call_id is not None else None
        if parked is None or self._budget is None:
            return None
        self._budget.held -= parked[1]
        return parked[0]

    def forget_meta(self) -> None:
        """The connection ended: what is parked goes (its budget goes with the connection)."""
        self._parked = None

    def _build_handler(self, name: str) -> Optional[Handler]:
        """First call of ``name`` on this connection: look it up, wrap it if typed, keep it."""
        handler: Optional[Handler] = None
        if self._handlers is _NO_HANDLERS:
            self._handlers = {}
        if name in self.stream_names:
            handler = self._handlers[name] = _not_in_a_batch(name)
        elif name in self._exposed:
            spec = method_spec(type(self.methods), name)
            method = getattr(self.methods, name)
            if not inspect.iscoroutinefunction(method):
                method = _in_thread(method)
            handler = self._handlers[name] = typed_handler(method, spec)
        elif name == GET_CHANNEL_ID and self._channel is not None:
            channel = self._channel

            async def channel_id() -> str:
                return channel.id

            handler = self._handlers[name] = channel_id
        elif name == DISCOVER and self.discovery:
            handler = self._handlers[name] = self._discover
        return handler

    def open_stream(self, name: str, params: Any) -> Any:
        """The async generator a stream call runs; RemoteValueError (-32601/-32602) when it cannot start."""
        if name not in self.stream_names:
            raise RemoteValueError(f"Method not found: {name}", code=JsonRpcErrorCode.METHOD_NOT_FOUND)
        if name == SUBSCRIBE and self._topics is not None:
            subscribe, channel = self._topics.subscribe, self._channel  # subscribe(channel, topics, on_slow, since)
            try:
                if params is None:
                    return subscribe(channel)
                return subscribe(channel, **params) if type(params) is dict else subscribe(channel, *params)
            except TypeError as exc:
                raise RemoteValueError(
                    f"Invalid params for {name}: {exc}", code=JsonRpcErrorCode.INVALID_PARAMS
                ) from None
        method = getattr(self.methods, name)
        spec = method_spec(type(self.methods), name)
        args: tuple[Any, ...] = ()
        kwargs: Dict[str, Any] = {}
        if params is not None:
            if type(params) is dict:
                kwargs = params
            else:
                args = tuple(params)
        if spec.validates:
            _, kwargs = spec.convert(args, kwargs)  # raises RpcInvalidParamsError with the path
            args = ()
        try:
            return method(*args, **kwargs)
        except TypeError as exc:
            raise RemoteValueError(f"Invalid params for {name}: {exc}", code=JsonRpcErrorCode.INVALID_PARAMS) from None

    async def _discover(self) -> Dict[str, Any]:
        """``rpc.discover``: an OpenRPC document of the methods this side exposes."""
        return openrpc_document(self.methods, self._exposed, type(self.methods).__name__, __version__)

    async def invoke(self, name: str, params: Any, call_id: Any, notification: bool = False) -> Optional[bytes]:
        """Run one method; answer the encoded response (``None`` for notifications)."""
        if self._interceptors:
            return await self._invoke_intercepted(name, params, call_id, notification)
        handler = self._handlers.get(name) or self._build_handler(name)
        if handler is None:
            if notification:
                return None
            return encode_error(call_id, JsonRpcErrorCode.METHOD_NOT_FOUND, f"Method not found: {name}")
        try:
            if params is None:
                result = await handler()
            elif type(params) is dict:
                result = await handler(**params)
            else:
                result = await handler(*params)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failure(exc, handler, name, params, call_id, notification)
        if notification or result is NoResponse:
            return None
        try:
            return encode_result(call_id, result)
        except ENCODE_ERRORS as exc:
            return self.internal_error(call_id, name, exc, False, "result could not be encoded as JSON")

    async def _invoke_intercepted(self, name: str, params: Any, call_id: Any, notification: bool) -> Optional[bytes]:
        """``invoke`` with the interceptors around the method (see interceptors.py)."""
        handler = self._handlers.get(name) or self._build_handler(name)
        channel = self._channel
        meta = self._take_meta(call_id)
        call = RpcCall(channel, name, params, call_id, notification, False, meta)  # type: ignore[arg-type]

        async def final() -> Any:
            if handler is None:
                raise RemoteValueError(f"Method not found: {name}", code=JsonRpcErrorCode.METHOD_NOT_FOUND)
            if call.params is None:
                return await handler()
            if type(call.params) is dict:
                return await handler(**call.params)
            return await handler(*call.params)

        try:
            result = await run_chain(self._interceptors, call, final, False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._failure(exc, handler, name, params, call_id, notification)
        if notification or result is NoResponse:
            return None
        try:
            return encode_result(call_id, result)
        except ENCODE_ERRORS as exc:
            return self.internal_error(call_id, name, exc, False, "result could not be encoded as JSON")

    def _failure(
        self, exc: Exception, handler: Optional[Handler], name: str, params: Any, call_id: Any, notification: bool
    ) -> Optional[bytes]:
        """The answer to a method that raised: its JSON-RPC error, or -32602 / -32603."""
        if isinstance(exc, RemoteValueError):
            if notification:
                return None
            if exc.response is not None:
                # A call this method made to the other side failed, and the
                # method let it escape: that is this method's failure, not a
                # verdict on the caller's call (a -32601 from the inner call
                # would read as "the method you called does not exist").
                return encode_error(
                    call_id,
                    JsonRpcErrorCode.INTERNAL_ERROR,
                    f"Internal error: a nested call failed: [{exc.code}] {exc.message}",
                    {"code": exc.code, "message": exc.message, "data": exc.data},
                )
            return encode_error(call_id, exc.code, exc.message, exc.data)
        if isinstance(exc, TypeError) and handler is not None and not _params_bind(handler, params):
            if notification:
                return None
            return encode_error(call_id, JsonRpcErrorCode.INVALID_PARAMS, f"Invalid params for {name}: {exc}")
        return self.internal_error(call_id, name, exc, notification)

    def internal_error(
        self, call_id: Any, name: str, exc: Exception, notification: bool, what: str = ""
    ) -> Optional[bytes]:
        """Log the failure; answer -32603, with details only in debug mode (they may leak internals)."""
        logger.error("method %s failed: %r", name, exc, exc_info=exc)
        self._on_internal_error(exc)
        if notification:
            return None
        if self.debug_mode:
            message = f"Internal error: {what or exc}"
            data: Any = {"type": type(exc).__name__, "method": name}
        else:
            message = f"Internal error: {what}" if what else "Internal error"
            data = None
        return encode_error(call_id, JsonRpcErrorCode.INTERNAL_ERROR, message, data)
