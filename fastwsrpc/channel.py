"""RpcChannel: one JSON-RPC 2.0 conversation over one connection, both ways.

It owns dispatch of incoming calls, the table of outgoing calls waiting for an
answer, and the ``.other`` proxy. It knows nothing of FastAPI or ``websockets``:
it reads and writes through a :class:`~fastwsrpc.transport.Transport`.

The per-message budget, on each side: one decode (``_accel.decode``), one dict
lookup for the method or the pending call, one future per outgoing call, one
task per incoming call (a handler is a coroutine and must not block the read
loop: a method that calls back into its caller would deadlock otherwise), one
encode. No log string is built unless debug logging is on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import uuid
from typing import (
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import msgspec

from . import _accel
from ._version import __version__
from .config import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_PROMISE_TTL,
    RpcDebugConfig,
)
from .errors import (
    JsonRpcErrorCode,
    RemoteValueError,
    RpcChannelClosedError,
    RpcMessageTooLargeError,
    RpcNotConnectedError,
    RpcTimeoutError,
    error_for_code,
)
from .logger import get_logger
from .methods import NoResponse, RpcMethodsBase, exposed_method_names
from .protocol import (
    Batch,
    Invalid,
    Notification,
    Request,
    Response,
    encode_batch,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
)
from .transport import CLOSE_MESSAGE_TOO_BIG, CLOSE_NORMAL, Transport, TransportClosed
from .typed import convert_result, method_spec, openrpc_document, typed_handler

logger = get_logger("channel")

OnConnectCallback = Callable[["RpcChannel"], Awaitable[Any]]
OnDisconnectCallback = Callable[["RpcChannel"], Awaitable[Any]]
OnErrorCallback = Callable[["RpcChannel", Exception], Awaitable[Any]]

Params = Union[Mapping[str, Any], Sequence[Any], None]
#: One call of a batch: ``(method, params)``, ``(method, params, is_notification)``
#: or ``{"method": ..., "params": ..., "notification": bool}``.
BatchCall = Union[Tuple[Any, ...], Mapping[str, Any]]

#: LSP's convention for cancellation that crosses the wire.
CANCEL_REQUEST = "$/cancelRequest"
#: OpenRPC's discovery method (``rpc.`` names are reserved for this by JSON-RPC 2.0).
DISCOVER = "rpc.discover"

_DEFAULT: Any = object()
_EAGER = sys.version_info >= (3, 12)
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, msgspec.EncodeError)


class RpcPromise:
    """An outgoing call started with :meth:`RpcChannel.async_call`; await :meth:`wait`."""

    __slots__ = ("_future", "call_id")

    def __init__(self, call_id: Any, future: asyncio.Future) -> None:
        self.call_id = call_id
        self._future = future

    async def wait(self) -> Response:
        return await self._future

    def done(self) -> bool:
        return self._future.done()


class _RemoteMethod:
    """``channel.other.name``: calling it calls ``name`` on the other side."""

    __slots__ = ("_channel", "_name")

    def __init__(self, channel: RpcChannel, name: str) -> None:
        self._channel = channel
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Response]:
        if "result_type" in kwargs:
            return self._typed_call(kwargs.pop("result_type"), args, kwargs)
        if args:
            if kwargs:
                raise TypeError(f"{self._name}(): JSON-RPC params are either positional or named, not both")
            return self._channel.call(self._name, list(args))
        return self._channel.call(self._name, kwargs if kwargs else None)

    async def _typed_call(self, result_type: Any, args: Any, kwargs: Any) -> Response:
        """``other.name(..., result_type=T)``: the response's ``.result`` comes back as a ``T``."""
        response = await self(*args, **kwargs)
        response.result = convert_result(response.result, result_type)
        return response

    def __repr__(self) -> str:
        return f"<remote method {self._name!r} of channel {self._channel.id}>"


class RpcCaller:
    """The ``.other`` of a channel: any public attribute is a remote method."""

    def __init__(self, channel: RpcChannel) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> _RemoteMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        proxy = _RemoteMethod(self._channel, name)
        self.__dict__[name] = proxy  # later lookups are plain attribute hits
        return proxy


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


class RpcChannel:
    """A bidirectional JSON-RPC 2.0 channel over one transport.

    Keyword arguments not named here become the channel's ``context`` dict (the
    endpoint puts the FastAPI ``WebSocket`` there), as in ``fastapi-ws-rpc``.
    """

    def __init__(
        self,
        methods: Optional[RpcMethodsBase],
        socket: Transport,
        channel_id: Optional[str] = None,
        default_response_timeout: Optional[float] = None,
        sync_channel_id: bool = False,
        max_pending_requests: Optional[int] = None,
        max_connection_duration: Optional[float] = None,
        debug_config: Optional[RpcDebugConfig] = None,
        subprotocol: Optional[str] = None,
        connect_callbacks: Optional[List[OnConnectCallback]] = None,
        disconnect_callbacks: Optional[List[OnDisconnectCallback]] = None,
        error_callbacks: Optional[List[OnErrorCallback]] = None,
        max_send_queue_size: Optional[int] = None,
        max_message_size: Optional[int] = None,
        promise_ttl: float = DEFAULT_PROMISE_TTL,
        discovery: bool = True,
        **kwargs: Any,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.id: str = channel_id or uuid.uuid4().hex
        self.socket = socket
        self._send = socket.send
        self.methods = (methods if methods is not None else RpcMethodsBase())._copy_()
        self.methods._set_channel_(self)
        self._exposed = exposed_method_names(type(self.methods))
        self._handlers: Dict[str, Callable[..., Awaitable[Any]]] = {}
        self.default_response_timeout = default_response_timeout
        self.max_pending_requests = max_pending_requests or DEFAULT_MAX_PENDING_REQUESTS
        self.max_message_size = max_message_size or DEFAULT_MAX_MESSAGE_SIZE
        self.max_connection_duration = max_connection_duration
        self.promise_ttl = promise_ttl
        self.debug_config = debug_config or RpcDebugConfig()
        self.subprotocol = subprotocol
        self.sync_channel_id = sync_channel_id
        self._pending = _accel.PendingTable(self.max_pending_requests)
        self._tasks: Set[asyncio.Task] = set()
        self._by_id: Dict[Any, asyncio.Task] = {}  # incoming calls in flight, for $/cancelRequest
        self.discovery = discovery
        self._saved: Dict[str, RpcPromise] = {}
        self._connect_callbacks: List[OnConnectCallback] = list(connect_callbacks or ())
        self._disconnect_callbacks: List[OnDisconnectCallback] = list(disconnect_callbacks or ())
        self._error_callbacks: List[OnErrorCallback] = list(error_callbacks or ())
        self._closed_event = asyncio.Event()
        self._close_reason = ""
        self._closed = False
        self._started_at = self._loop.time()
        self._duration_handle: Optional[asyncio.TimerHandle] = None
        if max_connection_duration:
            self._duration_handle = self._loop.call_later(max_connection_duration, self._on_max_duration)
        self._sweep_handle = self._loop.call_later(promise_ttl, self._sweep)
        self.other = RpcCaller(self)
        self._context: Dict[str, Any] = dict(kwargs)

    # ----------------------------------------------------------------- state
    @property
    def context(self) -> Dict[str, Any]:
        return self._context

    def is_closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str:
        return self._close_reason

    async def wait_until_closed(self) -> bool:
        await self._closed_event.wait()
        return True

    def get_connection_age(self) -> float:
        return self._loop.time() - self._started_at

    def get_remaining_duration(self) -> Optional[float]:
        if self.max_connection_duration is None:
            return None
        return max(0.0, self.max_connection_duration - self.get_connection_age())

    @property
    def pending_count(self) -> int:
        """Outgoing calls waiting for an answer."""
        return len(self._pending)

    @property
    def running_count(self) -> int:
        """Incoming calls being handled."""
        return len(self._tasks)

    # ------------------------------------------------------------- callbacks
    def add_connect_callback(self, callback: OnConnectCallback) -> None:
        self._connect_callbacks.append(callback)

    def remove_connect_callback(self, callback: OnConnectCallback) -> bool:
        return _remove(self._connect_callbacks, callback)

    def add_disconnect_callback(self, callback: OnDisconnectCallback) -> None:
        self._disconnect_callbacks.append(callback)

    def remove_disconnect_callback(self, callback: OnDisconnectCallback) -> bool:
        return _remove(self._disconnect_callbacks, callback)

    def add_error_callback(self, callback: OnErrorCallback) -> None:
        self._error_callbacks.append(callback)

    def remove_error_callback(self, callback: OnErrorCallback) -> bool:
        return _remove(self._error_callbacks, callback)

    async def on_connect(self) -> None:
        """Run the connect callbacks, each in its own task.

        Not awaited before the read loop starts: a callback that calls the other
        side needs the read loop running to get its answer.
        """
        for callback in self._connect_callbacks:
            self._spawn(self._run_callback(callback, self))

    async def on_disconnect(self) -> None:
        """Mark the channel closed (failing pending calls) and await the disconnect callbacks."""
        self._mark_closed("disconnected")
        await self._fire_disconnect()

    async def on_error(self, error: Exception) -> None:
        for callback in self._error_callbacks:
            await self._run_callback(callback, self, error)

    async def _run_callback(self, callback: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await callback(*args)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("callback %r of channel %s failed", callback, self.id)

    # ----------------------------------------------------------- the reader
    async def run(self) -> None:
        """Read frames until the connection ends; then the channel is closed.

        The endpoint and the client each run this as their read loop.
        """
        receive = self.socket.receive
        feed = self.feed
        reason = "connection closed"
        try:
            while True:
                feed(await receive())
        except TransportClosed as exc:
            reason = str(exc)
        except RpcMessageTooLargeError as exc:
            reason = f"closed with code 1009: {exc}"
            logger.warning("channel %s: %s", self.id, exc)
            await _quiet(self.socket.close(CLOSE_MESSAGE_TOO_BIG, "message too big"))
        except asyncio.CancelledError:
            reason = "reader cancelled"
            raise
        finally:
            self._mark_closed(reason)
            await self._fire_disconnect()

    def feed(self, frame: Union[str, bytes]) -> None:
        """Handle one received frame. Raises RpcMessageTooLargeError for an oversized one."""
        msg = _accel.decode(frame, self.max_message_size)
        kind = type(msg)
        if kind is Response:
            if not self._pending.resolve(msg.id, msg) and logger.isEnabledFor(logging.DEBUG):
                logger.debug("channel %s: answer to unknown call %r dropped", self.id, msg.id)
        elif kind is Request:
            self._start_request(msg)
        elif kind is Notification:
            if msg.method == CANCEL_REQUEST:
                self._cancel_incoming(msg.params)
            else:
                self._spawn(self._invoke(msg.method, msg.params, None, notification=True))
        elif kind is Invalid:
            self._spawn(self._send_quietly(encode_error(msg.id, msg.code, msg.message)))
        elif kind is Batch:
            self._spawn(self._handle_batch(msg))

    # ------------------------------------------------------ incoming calls
    def _start_request(self, req: Request) -> None:
        if len(self._tasks) >= self.max_pending_requests:
            self._spawn_untracked(
                self._send_quietly(
                    encode_error(
                        req.id,
                        JsonRpcErrorCode.SERVER_OVERLOADED,
                        f"Server overloaded: {len(self._tasks)} calls in flight, "
                        f"the limit is {self.max_pending_requests}",
                    )
                )
            )
            return
        task = self._spawn(self._handle_request(req))
        if task is not None:
            self._by_id[req.id] = task

    async def _handle_request(self, req: Request) -> None:
        try:
            data = await self._invoke(req.method, req.params, req.id)
        finally:
            if self._by_id:
                self._by_id.pop(req.id, None)
        if data is not None:
            await self._send_quietly(data)

    def _cancel_incoming(self, params: Any) -> None:
        """The caller gave up on a call: cancel its handler; it will not be answered."""
        call_id = params.get("id") if isinstance(params, dict) else (params[0] if params else None)
        task = self._by_id.pop(call_id, None) if _hashable(call_id) else None
        if task is not None:
            task.cancel()

    def _build_handler(self, name: str) -> Optional[Callable[..., Awaitable[Any]]]:
        """First call of ``name`` on this channel: look it up, wrap it if typed, keep it."""
        handler: Optional[Callable[..., Awaitable[Any]]] = None
        if name in self._exposed:
            spec = method_spec(type(self.methods), name)
            handler = self._handlers[name] = typed_handler(getattr(self.methods, name), spec)
        elif name == DISCOVER and self.discovery:
            handler = self._handlers[name] = self._discover
        return handler

    async def _discover(self) -> Dict[str, Any]:
        """``rpc.discover``: an OpenRPC document of the methods this side exposes."""
        return openrpc_document(self.methods, self._exposed, type(self.methods).__name__, __version__)

    async def _invoke(self, name: str, params: Any, call_id: Any, notification: bool = False) -> Optional[bytes]:
        """Run one method; answer the encoded response (None for notifications)."""
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
        except RemoteValueError as exc:
            if notification:
                return None
            return encode_error(call_id, exc.code, exc.message, exc.data)
        except TypeError as exc:
            if not _params_bind(handler, params):
                if notification:
                    return None
                return encode_error(call_id, JsonRpcErrorCode.INVALID_PARAMS, f"Invalid params for {name}: {exc}")
            return self._internal_error(call_id, name, exc, notification)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._internal_error(call_id, name, exc, notification)
        if notification or result is NoResponse:
            return None
        try:
            return encode_result(call_id, result)
        except _ENCODE_ERRORS as exc:
            return self._internal_error(call_id, name, exc, False, "result could not be encoded as JSON")

    def _internal_error(
        self, call_id: Any, name: str, exc: Exception, notification: bool, what: str = ""
    ) -> Optional[bytes]:
        logger.error("method %s failed: %r", name, exc, exc_info=exc)
        if self._error_callbacks:
            self._spawn_untracked(self.on_error(exc))
        if notification:
            return None
        if self.debug_config.debug_mode:
            message = f"Internal error: {what or exc}"
            data: Any = {"type": type(exc).__name__, "method": name}
        else:
            message = f"Internal error: {what}" if what else "Internal error"
            data = None
        return encode_error(call_id, JsonRpcErrorCode.INTERNAL_ERROR, message, data)

    async def _handle_batch(self, batch: Batch) -> None:
        waiting: List[Awaitable[Optional[bytes]]] = []
        parts: List[bytes] = []
        for item in batch.items:
            kind = type(item)
            if kind is Request:
                waiting.append(self._invoke(item.method, item.params, item.id))
            elif kind is Notification:
                waiting.append(self._invoke(item.method, item.params, None, notification=True))
            elif kind is Invalid:
                parts.append(encode_error(item.id, item.code, item.message))
            elif kind is Response:
                self._pending.resolve(item.id, item)
        if waiting:
            parts.extend(part for part in await asyncio.gather(*waiting) if part is not None)
        if parts:
            await self._send_quietly(encode_batch(parts))

    # ------------------------------------------------------ outgoing calls
    def _check_open(self) -> None:
        if self._closed:
            raise RpcNotConnectedError(
                f"channel {self.id} is closed ({self._close_reason}); reconnect, or open a new client, before calling"
            )

    async def call(self, name: str, args: Params = None, timeout: Any = _DEFAULT) -> Response:
        """Call ``name`` on the other side and wait for its answer.

        ``args`` is a dict (named params) or a list (positional). Returns the
        :class:`~fastwsrpc.protocol.Response` (``.result``); a remote error raises
        the matching :class:`~fastwsrpc.errors.RemoteValueError` subclass.
        ``timeout`` defaults to the channel's ``default_response_timeout``
        (``None``: wait as long as the connection lives).
        """
        if self._closed:
            self._check_open()
        if timeout is _DEFAULT:
            timeout = self.default_response_timeout
        loop = self._loop
        pending = self._pending
        future = loop.create_future()
        call_id = pending.register(future)  # its timeout is the timer below, not a table deadline
        try:
            await self._send(encode_request(call_id, name, args))
        except BaseException as exc:
            pending.discard(call_id)
            if isinstance(exc, TransportClosed):
                raise RpcChannelClosedError(f"call {name!r} not sent: {exc}") from exc
            raise
        handle = loop.call_later(timeout, self._time_out, call_id, name, timeout) if timeout else None
        try:
            response: Response = await future
        except (asyncio.CancelledError, RpcTimeoutError):
            # The caller gave up: tell the other side to stop working on it.
            pending.discard(call_id)
            self._send_cancel(call_id)
            raise
        except BaseException:
            pending.discard(call_id)
            raise
        finally:
            if handle is not None:
                handle.cancel()
        error = response.error
        if error is not None:
            raise error_for_code(error.code, error.message, error.data, response)
        return response

    def _send_cancel(self, call_id: Any) -> None:
        if not self._closed:
            self._spawn_untracked(self._send_quietly(encode_notification(CANCEL_REQUEST, {"id": call_id})))

    def _time_out(self, call_id: Any, name: str, timeout: float) -> None:
        self._pending.fail(call_id, RpcTimeoutError(f"no answer to {name!r} within {timeout} s"))

    def async_call(self, name: str, args: Params = None, call_id: Any = None) -> RpcPromise:
        """Start a call without waiting; the answer is kept until collected.

        Returns an :class:`RpcPromise`; ``get_saved_response(call_id)`` or
        ``await promise.wait()`` gives the response. Entries not collected are
        dropped after ``promise_ttl`` seconds.
        """
        self._check_open()
        loop = self._loop
        future = loop.create_future()
        deadline = loop.time() + self.promise_ttl
        if call_id is None:
            call_id = self._pending.register(future, deadline)
        else:
            self._pending.add(call_id, future, deadline)
        promise = RpcPromise(call_id, future)
        key = str(call_id)
        self._saved[key] = promise
        self._spawn(self._send_or_fail(call_id, encode_request(call_id, name, args)))
        return promise

    def _sweep(self) -> None:
        """Every ``promise_ttl`` seconds: drop calls whose deadline passed and nobody collected."""
        for call_id in self._pending.expire(self._loop.time()):
            self._saved.pop(str(call_id), None)
        if not self._closed:
            self._sweep_handle = self._loop.call_later(self.promise_ttl, self._sweep)

    async def _send_or_fail(self, call_id: Any, data: bytes) -> None:
        try:
            await self._send(data)
        except Exception as exc:
            self._pending.fail(call_id, RpcChannelClosedError(f"call not sent: {exc}"))

    def get_saved_promise(self, call_id: Any) -> Optional[RpcPromise]:
        return self._saved.get(str(call_id))

    def get_saved_response(self, call_id: Any) -> Optional[Response]:
        promise = self._saved.get(str(call_id))
        if promise is None or not promise.done() or promise._future.cancelled():
            return None
        return promise._future.result() if promise._future.exception() is None else None

    def clear_saved_call(self, call_id: Any) -> None:
        self._saved.pop(str(call_id), None)

    async def notify(self, name: str, args: Params = None) -> None:
        """Send a notification: returns once the frame is handed to the socket; never answered."""
        if self._closed:
            self._check_open()
        try:
            await self._send(encode_notification(name, args))
        except TransportClosed as exc:
            raise RpcChannelClosedError(f"notification {name!r} not sent: {exc}") from exc

    async def call_batch(self, calls: Iterable[BatchCall], timeout: Any = _DEFAULT) -> List[Response]:
        """Send several calls in one frame; answer their responses in the order given.

        Items are ``(method, params)``, ``(method, params, True)`` for a
        notification, or dicts with ``method``, ``params`` and ``notification``.
        Errors are not raised: each failed call's response carries ``.error``,
        so one failure does not hide the other results. Notifications have no
        response in the list.
        """
        self._check_open()
        if timeout is _DEFAULT:
            timeout = self.default_response_timeout
        loop = self._loop
        pending = self._pending
        parts: List[bytes] = []
        calls_made: List[Tuple[Any, asyncio.Future]] = []
        try:
            for item in calls:
                if isinstance(item, Mapping):
                    name, params, is_note = (
                        item["method"],
                        item.get("params"),
                        item.get("notification", False),
                    )
                else:
                    name, params = item[0], item[1] if len(item) > 1 else None
                    is_note = bool(item[2]) if len(item) > 2 else False
                if is_note:
                    parts.append(encode_notification(name, params))
                    continue
                future = loop.create_future()
                call_id = pending.register(future)
                calls_made.append((call_id, future))
                parts.append(encode_request(call_id, name, params))
            if not parts:
                raise ValueError("call_batch needs at least one call")
            await self._send(encode_batch(parts))
            if not calls_made:
                return []
            waiter = asyncio.gather(*(future for _, future in calls_made))
            if timeout:
                return list(await asyncio.wait_for(waiter, timeout))
            return list(await waiter)
        except asyncio.TimeoutError as exc:
            raise RpcTimeoutError(f"no complete answer to the batch within {timeout} s") from exc
        except TransportClosed as exc:
            raise RpcChannelClosedError(f"batch not sent: {exc}") from exc
        finally:
            for call_id, _ in calls_made:
                pending.discard(call_id)

    async def ping(self) -> Response:
        return await self.call("ping")

    # ----------------------------------------------------------- closing
    def _on_max_duration(self) -> None:
        logger.info("channel %s reached max_connection_duration; closing", self.id)
        self._spawn_untracked(self.close(CLOSE_NORMAL, "max connection duration reached"))

    def _mark_closed(self, reason: str) -> None:
        """Fail every pending call at once and stop every handler; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._closed_event.set()
        self._sweep_handle.cancel()
        if self._duration_handle is not None:
            self._duration_handle.cancel()
        message = f"channel {self.id} closed before the answer arrived ({reason})"
        self._pending.fail_all(lambda: RpcChannelClosedError(message))
        self._saved.clear()
        self._by_id.clear()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:  # a method may close its own channel
                task.cancel()

    async def _fire_disconnect(self) -> None:
        callbacks, self._disconnect_callbacks = self._disconnect_callbacks, []
        for callback in callbacks:
            await self._run_callback(callback, self)

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection; pending calls fail with RpcChannelClosedError."""
        self._mark_closed(reason or "closed locally")
        await _quiet(self.socket.close(code, reason))
        await self._fire_disconnect()

    # ------------------------------------------------------------ helpers
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> Optional[asyncio.Task]:
        if _EAGER:
            # Python 3.12+: run the handler's first step now; one that never
            # suspends (most do not) finishes here, never scheduled, never tracked.
            task = asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg]
            if task.done():
                return None
        else:
            task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn_untracked(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coro)
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _send_quietly(self, data: bytes) -> None:
        """Send an answer; if the connection is gone, the answer has nobody to go to."""
        try:
            await self._send(data)
        except TransportClosed:
            pass


#: Tasks that must outlive the channel's own cancellation (closing, answers of
#: refusal); kept referenced so the loop does not garbage-collect them mid-run.
_background: Set[asyncio.Task] = set()


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int)) or value is None


def _remove(callbacks: List[Any], callback: Any) -> bool:
    try:
        callbacks.remove(callback)
    except ValueError:
        return False
    return True


async def _quiet(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # the socket is already gone; nothing left to tell it
        pass
