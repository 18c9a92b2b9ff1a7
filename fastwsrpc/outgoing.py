"""The outgoing side of a connection: ``.other`` proxies, call, notify, batch.

Every call waits on a future in the pending table; one timer per call (or per
batch) times it out, and one path gives up on it: the entry leaves the table and
the other side is told with ``$/cancelRequest`` (LSP's convention), whether the
caller timed out or was cancelled. ``call`` and ``call_batch`` share that path.
Calls in flight stay under the peer's advertised limit (``window``): past it
they wait here, in order and bounded, so a well-behaved server never has to
refuse them. The proxies call through an owner (the channel), which this
module knows only by the two methods it uses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Deque,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    overload,
)

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore[assignment]

from .budget import Budget
from .config import RpcSettings
from .errors import (
    RpcBackpressureError,
    RpcChannelClosedError,
    RpcNotConnectedError,
    RpcTimeoutError,
    error_for_code,
)
from .interceptors import META, RpcCall, RpcInterceptor, meta_params, run_chain
from .protocol import CANCEL_REQUEST, ErrorObject, Response, encode_batch, encode_notification, encode_request
from .runner import HANDLING, HandlerRunner
from .state import ConnectionState
from .transport import TransportClosed
from .typed import convert_result

if TYPE_CHECKING:
    from .streams import RpcStream

#: Items a stream consumer buffers by default.
DEFAULT_STREAM_BUFFER = 64

Params = Union[Mapping[str, Any], Sequence[Any], None]
#: One call of a batch: ``(method, params)``, ``(method, params, is_notification)``
#: or ``{"method": ..., "params": ..., "notification": bool}``.
BatchCall = Union[Tuple[Any, ...], Mapping[str, Any]]

__all__ = ["CANCEL_REQUEST", "DEFAULT_STREAM_BUFFER", "BatchCall", "OutgoingCalls", "Params", "RpcCaller"]


class _Default:
    """ "Not given": for ``timeout=``, the channel's ``default_response_timeout`` applies.

    A named sentinel so that ``help()`` shows ``timeout=<default>``, not ``<object object at 0x...>``.
    """

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()
_T = TypeVar("_T")


_R = TypeVar("_R", covariant=True)


class TypedResponse(Protocol[_R]):
    """What ``other.name(..., result_type=T)`` gives, to a type checker: a response whose ``.result`` is a ``T``.

    At run time it is the ordinary :class:`~fastwsrpc.protocol.Response`, its
    ``.result`` converted to ``T``; this protocol only tells mypy so.
    """

    @property
    def id(self) -> Any: ...

    @property
    def result(self) -> _R: ...

    @property
    def error(self) -> Optional[ErrorObject]: ...


class _Owner(Protocol):
    """What the proxies call through: the channel (or the client), as far as this module needs it."""

    @property
    def id(self) -> str: ...

    def call(self, name: str, args: Params = None, timeout: Any = ...) -> Awaitable[Response]: ...

    def stream(
        self,
        name: str,
        args: Params = None,
        *,
        buffer: int = ...,
        timeout: Optional[float] = ...,
        result_type: Optional[Type[Any]] = ...,
    ) -> RpcStream: ...


class _RemoteMethod:
    """``channel.other.name``: calling it calls ``name`` on the other side."""

    __slots__ = ("_channel", "_name")

    def __init__(self, channel: _Owner, name: str) -> None:
        self._channel = channel
        self._name = name

    @overload
    def __call__(self, *args: Any, result_type: Type[_T], **kwargs: Any) -> Awaitable[TypedResponse[_T]]: ...

    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Response]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        if "result_type" in kwargs:
            return self._typed_call(kwargs.pop("result_type"), args, kwargs)
        if args:
            if kwargs:
                raise TypeError(f"{self._name}(): JSON-RPC params are either positional or named, not both")
            return self._channel.call(self._name, list(args))
        return self._channel.call(self._name, kwargs if kwargs else None)

    def stream(
        self,
        *args: Any,
        buffer: Optional[int] = None,
        timeout: Optional[float] = None,
        result_type: Optional[Type[Any]] = None,
        **kwargs: Any,
    ) -> RpcStream:
        """``other.ticks.stream(n=5)``: consume the remote stream method (``async for``, or ``async with``)."""
        if args and kwargs:
            raise TypeError(f"{self._name}(): JSON-RPC params are either positional or named, not both")
        params: Params = list(args) if args else (kwargs or None)
        return self._channel.stream(
            self._name, params, buffer=buffer or DEFAULT_STREAM_BUFFER, timeout=timeout, result_type=result_type
        )

    async def _typed_call(self, result_type: Any, args: Any, kwargs: Any) -> Response:
        """``other.name(..., result_type=T)``: the response's ``.result`` comes back as a ``T``."""
        response: Response = await self(*args, **kwargs)
        response.result = convert_result(response.result, result_type)
        return response

    def __repr__(self) -> str:
        return f"<remote method {self._name!r} of channel {self._channel.id}>"


class RpcCaller:
    """The ``.other`` of a channel: any public attribute is a remote method."""

    def __init__(self, channel: _Owner) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> _RemoteMethod:
        if name.startswith("_") and name != "_get_channel_id_":  # fastapi-ws-rpc's one built-in
            raise AttributeError(name)
        proxy = _RemoteMethod(self._channel, name)
        self.__dict__[name] = proxy  # later lookups are plain attribute hits
        return proxy


class OutgoingCalls:
    """Everything that starts with us: calls, notifications, batches, and the local queue past the peer's limit."""

    __slots__ = (
        "_budget",
        "_id",
        "_interceptors",
        "_loop",
        "_max_queued_calls",
        "_owner",
        "_peer_features",
        "_raise_on_error",
        "_reserved",
        "_runner",
        "_state",
        "default_response_timeout",
        "pending",
        "waiters",
        "window",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        state: ConnectionState,
        budget: Budget,
        pending: Any,
        settings: RpcSettings,
        channel_id: str,
        owner: Any,
        runner: HandlerRunner,
        interceptors: Sequence[RpcInterceptor] = (),
        peer_features: FrozenSet[str] = frozenset(),
        peer_max_pending: Optional[int] = None,
    ) -> None:
        self._loop = loop
        self._state = state
        self._budget = budget
        #: The pending table of our calls (the accelerated twin's ``PendingTable``).
        self.pending = pending
        self._id = channel_id
        self._owner = owner  # what interceptors see as the call's channel
        self._runner = runner  # sends our frames (its bound methods are not kept: 128 bytes per connection)
        self.default_response_timeout = settings.default_response_timeout
        self._raise_on_error = settings.raise_on_error
        self._interceptors = tuple(interceptors)
        self._peer_features = peer_features
        window = pending.max_pending
        if window == settings.max_pending_requests:
            window = settings.max_pending_requests  # the settings' int, not one more per connection
        if peer_max_pending is not None and 0 < peer_max_pending < window:
            window = peer_max_pending
        #: Our calls in flight at most: our table's size, or the peer's advertised limit if lower.
        self.window = window
        self._reserved = 0  # slots given to woken waiters, not yet registered
        #: Calls waiting locally for a slot under ``window``, in order.
        self.waiters: Optional[Deque[asyncio.Future[None]]] = None  # made when a call first has to wait
        self._max_queued_calls = settings.max_queued_calls

    def check_open(self) -> None:
        if self._state.closed:
            raise RpcNotConnectedError(
                f"channel {self._id} is closed ({self._state.reason}); reconnect, or open a new client, before calling"
            )

    async def call(
        self,
        name: str,
        args: Params = None,
        timeout: Any = _DEFAULT,
        *,
        call_id: Any = None,
        _icall: Optional[RpcCall] = None,
    ) -> Response:
        """Call ``name`` on the other side and wait for its answer.

        ``args`` is a dict (named params) or a list (positional). Returns the
        :class:`~fastwsrpc.protocol.Response` (``.result``); a remote error raises
        the matching :class:`~fastwsrpc.errors.RemoteValueError` subclass.
        ``timeout`` defaults to the channel's ``default_response_timeout``
        (``None``: wait as long as the connection lives). ``call_id``: the id on
        the wire, chosen by the caller (the client's idempotent calls); by
        default the next of this connection.
        """
        if self._state.closed:
            self.check_open()
        if HANDLING.get() is self._owner:
            return await self._call_nested(lambda: self.call(name, args, timeout, call_id=call_id))
        if self._interceptors and _icall is None:
            icall = RpcCall(self._owner, name, args, None, False, True)
            return await run_chain(  # type: ignore[no-any-return]
                self._interceptors,
                icall,
                lambda: self.call(name, icall.params, timeout, call_id=call_id, _icall=icall),
                True,
            )
        if timeout is _DEFAULT:
            timeout = self.default_response_timeout
        loop = self._loop
        pending = self.pending
        if len(pending) + self._reserved >= self.window or self.waiters:
            timeout = await self._wait_for_slot(timeout)
        future = loop.create_future()
        if call_id is None:
            call_id = pending.register(future)  # its timeout is the timer below, not a table deadline
        else:
            pending.add(call_id, future)
        try:
            if _icall is not None:
                _icall.id = call_id
                if _icall.meta and "meta" in self._peer_features:
                    await self._runner.send_counted(encode_notification(META, meta_params(call_id, _icall.meta)))
            await self._runner.send_counted(encode_request(call_id, name, args))
        except BaseException as exc:
            pending.discard(call_id)
            if isinstance(exc, TransportClosed):
                raise RpcChannelClosedError(f"call {name!r} not sent: {exc}") from exc
            raise
        handle = loop.call_later(timeout, self._time_out, (call_id,), name, timeout) if timeout else None
        try:
            response: Response = await future
        except BaseException as exc:
            self._give_up((call_id,), exc)
            raise
        finally:
            if handle is not None:
                handle.cancel()
            if self.waiters:
                self._wake_slot()
        error = response.error
        if error is not None and self._raise_on_error:
            raise error_for_code(error.code, error.message, error.data, response)
        return response

    async def _wait_for_slot(self, timeout: Optional[float]) -> Optional[float]:
        """Our call would pass the peer's limit (``_window``): wait for an answer to free a slot.

        The wait is local and bounded (``max_queued_calls``), so a well-behaved
        server never has to refuse our calls with -32001; past the bound, or
        past the call's timeout, ``RpcBackpressureError``. Returns what is left
        of the timeout. Callers are served in order (a new call queues behind
        waiting ones), and each freed slot is reserved for the caller it wakes.
        """
        waiters = self.waiters
        if waiters is None:
            waiters = self.waiters = deque()
        if len(waiters) >= self._max_queued_calls:
            raise RpcBackpressureError(
                f"{len(self.pending)} calls wait for answers (the limit is {self.window}) and {len(waiters)} "
                f"more wait to be sent, the limit of max_queued_calls; wait for some to finish"
            )
        loop = self._loop
        waiter: asyncio.Future[None] = loop.create_future()
        waiters.append(waiter)
        started = loop.time()
        try:
            if timeout:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            else:
                await waiter
        except BaseException as exc:  # timed out, cancelled, or the channel closed
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._reserved -= 1  # a slot was given to us and will not be used: hand it on
                self._wake_slot()
            else:
                try:
                    waiters.remove(waiter)
                except ValueError:
                    pass
                waiter.cancel()
            if isinstance(exc, asyncio.TimeoutError):
                raise RpcBackpressureError(
                    f"no room under the limit of {self.window} calls in flight within {timeout} s"
                ) from None
            raise
        self._reserved -= 1  # our slot: the caller registers its call before it next yields
        if not timeout:
            return timeout
        left: float = timeout - (loop.time() - started)
        if left <= 0:
            self._wake_slot()
            raise RpcBackpressureError(f"no room under the limit of {self.window} calls in flight within {timeout} s")
        return left

    def _wake_slot(self) -> None:
        """An answer freed a slot under the peer's limit: give it to the first waiting call."""
        waiters = self.waiters
        while waiters and len(self.pending) + self._reserved < self.window:
            waiter = waiters.popleft()
            if not waiter.done():
                self._reserved += 1
                waiter.set_result(None)

    def fail_waiters(self, exc_factory: Callable[[], BaseException]) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc_factory())

    async def _call_nested(self, start: Callable[[], Awaitable[_T]]) -> _T:
        """A call one of our own handlers waits for: the reader must read on for its answer.

        Counted in ``Budget.nested``: while it is not zero, a notification past the
        full queue is dropped rather than stop the reader (see ``budget.py``).
        """
        budget = self._budget
        budget.nested += 1
        if budget.room is not None:
            budget.wake()
        token = HANDLING.set(None)  # the call started below takes the ordinary path
        try:
            return await start()
        finally:
            HANDLING.reset(token)
            budget.nested -= 1

    def _time_out(self, call_ids: Tuple[Any, ...], what: str, timeout: float) -> None:
        """The timer of a call or a batch: fail whatever is still unanswered."""
        fail = self.pending.fail
        for call_id in call_ids:
            fail(call_id, RpcTimeoutError(f"no answer to {what!r} within {timeout} s"))

    def _give_up(self, call_ids: Sequence[Any], exc: BaseException) -> None:
        """The one way out for calls nobody waits for any more.

        Each leaves the pending table; if the caller timed out or was
        cancelled, the other side is told to stop working on it.
        """
        discard = self.pending.discard
        for call_id in call_ids:
            discard(call_id)
        if isinstance(exc, (asyncio.CancelledError, RpcTimeoutError)) and not self._state.closed:
            for call_id in call_ids:
                self._runner.spawn_send(encode_notification(CANCEL_REQUEST, {"id": call_id}), False)

    async def notify(self, name: str, args: Params = None) -> None:
        """Send a notification: returns once the frame is handed to the socket; never answered."""
        if self._state.closed:
            self.check_open()
        if self._interceptors:
            icall = RpcCall(self._owner, name, args, None, True, True)
            await run_chain(self._interceptors, icall, lambda: self._notify(name, icall.params), True)
            return
        await self._notify(name, args)

    async def _notify(self, name: str, args: Params) -> None:
        try:
            await self._runner.send_counted(encode_notification(name, args))
        except TransportClosed as exc:
            raise RpcChannelClosedError(f"notification {name!r} not sent: {exc}") from exc

    async def send_raw(self, message: Mapping[str, Any]) -> None:
        """Send a JSON-RPC message built by hand (a dict), as ``fastapi-ws-rpc``'s ``send_raw``."""
        from .protocol import encode

        self.check_open()
        try:
            await self._runner.send_counted(encode(message))
        except TransportClosed as exc:
            raise RpcChannelClosedError(f"message not sent: {exc}") from exc

    async def call_batch(self, calls: Iterable[BatchCall], timeout: Any = _DEFAULT) -> List[Response]:
        """Send several calls in one frame; answer their responses in the order given.

        Items are ``(method, params)``, ``(method, params, True)`` for a
        notification, or dicts with ``method``, ``params`` and ``notification``.
        Errors are not raised: each failed call's response carries ``.error``,
        so one failure does not hide the other results. Notifications have no
        response in the list. A timeout (or cancellation) gives up on every
        unanswered call of the batch and tells the other side, as ``call`` does.
        """
        self.check_open()
        if HANDLING.get() is self._owner:
            return await self._call_nested(lambda: self.call_batch(calls, timeout))
        if timeout is _DEFAULT:
            timeout = self.default_response_timeout
        loop = self._loop
        pending = self.pending
        parts: List[bytes] = []
        call_ids: List[Any] = []
        futures: List[asyncio.Future[Response]] = []
        try:
            for item in calls:
                if isinstance(item, Mapping):
                    name, params, is_note = item["method"], item.get("params"), item.get("notification", False)
                else:
                    name, params = item[0], item[1] if len(item) > 1 else None
                    is_note = bool(item[2]) if len(item) > 2 else False
                if is_note:
                    parts.append(encode_notification(name, params))
                    continue
                future: asyncio.Future[Response] = loop.create_future()
                call_ids.append(pending.register(future))
                futures.append(future)
                parts.append(encode_request(call_ids[-1], name, params))
            if not parts:
                raise ValueError("call_batch needs at least one call")
            await self._runner.send_counted(encode_batch(parts))
        except BaseException as exc:
            for call_id in call_ids:
                pending.discard(call_id)
            if isinstance(exc, TransportClosed):
                raise RpcChannelClosedError(f"batch not sent: {exc}") from exc
            raise
        if not futures:
            return []
        ids = tuple(call_ids)
        handle = loop.call_later(timeout, self._time_out, ids, "batch", timeout) if timeout else None
        try:
            return [await future for future in futures]
        except BaseException as exc:
            unanswered = [cid for cid, f in zip(ids, futures) if not f.done() or f.cancelled() or _timed_out(f)]
            for f in futures:  # the other failures are this one's consequence: mark them seen
                if f.done() and not f.cancelled():
                    f.exception()
            self._give_up(unanswered, exc)
            for call_id in ids:
                pending.discard(call_id)
            raise
        finally:
            if handle is not None:
                handle.cancel()
            if self.waiters:
                self._wake_slot()

    async def ping(self) -> Response:
        """Call the other side's ``ping`` method: the whole path is alive if it answers."""
        return await self.call("ping")


def _timed_out(future: asyncio.Future[Any]) -> bool:
    return not future.cancelled() and isinstance(future.exception(), RpcTimeoutError)
