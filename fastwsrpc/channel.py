"""RpcChannel: one JSON-RPC 2.0 conversation over one connection, both ways.

This module keeps the lifecycle, the read loop with its budget, and closing.
Incoming calls are run by :mod:`~fastwsrpc.dispatch`; outgoing calls live in
:mod:`~fastwsrpc.outgoing`; fastapi-ws-rpc's promise store in
:mod:`~fastwsrpc.compat`. The channel knows nothing of FastAPI or
``websockets``: it reads and writes through a :class:`~fastwsrpc.transport.Transport`.

The budget of one connection (see ``docs/architecture.md``):

* incoming work in flight (calls, notifications, batch items, each until its
  answer is handed to the socket) is at most ``max_pending_requests`` (a batch
  is admitted whole, so at most ``max_pending_requests + max_batch_size - 1``);
* answers (and error replies) handed to the socket and not yet taken are at
  most ``max_send_queue_size``; our own calls are not in this budget (their
  senders wait, and the reader must go on reading their answers);
* when either is full the reader stops reading, and TCP pushes back on the
  peer. One exception: while calls of ours wait for answers, the reader goes on
  (their answers may be what the running handlers wait for; stopping would
  deadlock). Incoming work read meanwhile waits in a queue of at most
  ``max_pending_requests`` messages and starts as room frees; past that, calls
  are refused with -32001 (``refused_calls``) and notifications dropped
  (``dropped_notifications``, with a warning): the peer is exceeding a declared
  limit while we cannot stop reading.

Per message: one decode, one dict lookup (method or pending call), one task
per incoming call that does not finish at once, one encode; no log string is
built unless its level is on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections import deque
from types import ModuleType
from typing import Any, Awaitable, Callable, Coroutine, Deque, Dict, List, Mapping, Optional, Set, Union

from . import _accel
from .compat import PromiseStore, RpcPromise
from .config import RpcDebugConfig, RpcSettings
from .dispatch import Dispatcher
from .errors import JsonRpcErrorCode, RpcChannelClosedError, RpcMessageTooLargeError
from .logger import get_logger
from .methods import RpcMethodsBase
from .outgoing import CANCEL_REQUEST, BatchCall, OutgoingCalls, Params, RpcCaller
from .protocol import Batch, Invalid, Notification, Request, Response, encode_batch, encode_error
from .transport import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    Transport,
    TransportClosed,
)

__all__ = ["BatchCall", "OnConnectCallback", "OnDisconnectCallback", "OnErrorCallback", "Params", "RpcChannel"]
__all__ += ["RpcCaller", "RpcPromise"]

logger = get_logger("channel")

OnConnectCallback = Callable[["RpcChannel"], Awaitable[Any]]
OnDisconnectCallback = Callable[["RpcChannel"], Awaitable[Any]]
OnErrorCallback = Callable[["RpcChannel", Exception], Awaitable[Any]]

_EAGER = sys.version_info >= (3, 12)


class RpcChannel(OutgoingCalls, PromiseStore):
    """A bidirectional JSON-RPC 2.0 channel over one transport.

    Settings come as one :class:`~fastwsrpc.config.RpcSettings` (``settings=``),
    or as the legacy keyword names of its fields; an unknown keyword is a
    ``TypeError``. ``context`` is what the endpoint knows of the connection
    (the FastAPI ``WebSocket``, path parameters). ``speedups`` is the hot-path
    module (default: the one selected at import), so tests run both twins.
    """

    def __init__(
        self,
        methods: Optional[RpcMethodsBase],
        socket: Transport,
        channel_id: Optional[str] = None,
        default_response_timeout: Optional[float] = None,
        sync_channel_id: bool = False,
        *,
        settings: Optional[RpcSettings] = None,
        context: Optional[Mapping[str, Any]] = None,
        subprotocol: Optional[str] = None,
        connect_callbacks: Optional[List[OnConnectCallback]] = None,
        disconnect_callbacks: Optional[List[OnDisconnectCallback]] = None,
        error_callbacks: Optional[List[OnErrorCallback]] = None,
        debug_config: Optional[RpcDebugConfig] = None,
        speedups: Optional[ModuleType] = None,
        **limits: Any,
    ) -> None:
        settings = RpcSettings.resolve(
            settings,
            debug=debug_config,
            owner="RpcChannel",
            default_response_timeout=default_response_timeout,
            **limits,
        )
        self.settings = settings
        self._loop = asyncio.get_running_loop()
        self.id: str = channel_id or uuid.uuid4().hex
        self.socket = socket
        self._send = socket.send
        self.methods = (methods if methods is not None else RpcMethodsBase())._copy_()
        self.methods._set_channel_(self)
        self._dispatcher = Dispatcher(self.methods, settings.discovery, settings.debug_mode, self._internal_error)
        self._invoke = self._dispatcher.invoke
        impl: Any = speedups if speedups is not None else _accel.impl
        self._decode = impl.decode
        self.default_response_timeout = settings.default_response_timeout
        self.max_pending_requests = settings.max_pending_requests
        self.max_message_size = settings.max_message_size
        self.max_connection_duration = settings.max_connection_duration
        self.promise_ttl = settings.promise_ttl
        self.debug_config = RpcDebugConfig(debug_mode=settings.debug_mode)
        self.discovery = settings.discovery
        self.subprotocol = subprotocol
        self.sync_channel_id = sync_channel_id
        self._pending = impl.PendingTable(settings.max_pending_requests)
        self._saved: Dict[str, RpcPromise] = {}
        self._sweep_handle: Optional[asyncio.TimerHandle] = None
        # The budget (see the module docstring).
        self._tasks: Set[asyncio.Task[Any]] = set()
        self._by_id: Dict[Any, asyncio.Task[Any]] = {}  # incoming calls in flight, for $/cancelRequest
        self._active = 0  # incoming work units in flight
        self._sending = 0  # answers handed to the socket, not yet taken (in the budget)
        self._outgoing = 0  # our own frames handed to the socket, not yet taken
        self._max_active = settings.max_pending_requests
        self._max_sending = settings.max_send_queue_size
        self._room: Optional[asyncio.Future[None]] = None  # the paused reader waits on it
        self._deferred: Deque[Any] = deque()  # work read while over budget (see the module docstring)
        #: Notifications dropped because they came while the budget was full
        #: and the reader could not stop (calls of ours were waiting for answers).
        self.dropped_notifications = 0
        #: Calls refused with -32001 for the same reason.
        self.refused_calls = 0
        # Progress counters, read by the watchdog (cheaper than a clock per frame).
        self._received = 0
        self._sent = 0
        self._connect_callbacks: List[OnConnectCallback] = list(connect_callbacks or ())
        self._disconnect_callbacks: List[OnDisconnectCallback] = list(disconnect_callbacks or ())
        self._error_callbacks: List[OnErrorCallback] = list(error_callbacks or ())
        self._closed_event = asyncio.Event()
        self._close_reason = ""
        self._closed = False
        self._started_at = self._loop.time()
        self._duration_handle: Optional[asyncio.TimerHandle] = None
        if settings.max_connection_duration:
            self._duration_handle = self._loop.call_later(settings.max_connection_duration, self._on_max_duration)
        self._watchdog: Optional[_Watchdog] = _Watchdog.start(self)
        self.other = RpcCaller(self)
        self._context: Dict[str, Any] = dict(context or {})

    # ----------------------------------------------------------------- state
    @property
    def context(self) -> Dict[str, Any]:
        """What the endpoint or client knows of this connection (``websocket``, path parameters)."""
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
        """Incoming calls and notifications being handled (a batch counts its items)."""
        return self._active

    @property
    def sending_count(self) -> int:
        """Answers handed to the socket and not yet taken by it."""
        return self._sending

    @property
    def reading_paused(self) -> bool:
        """Whether the reader is waiting for room in the budget (flow control at work)."""
        return self._room is not None

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
            self._spawn(self._run_callback(callback, self), units=0)

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

    def _internal_error(self, exc: Exception) -> None:
        if self._error_callbacks:
            _spawn_background(self._loop, self.on_error(exc))

    # ----------------------------------------------------------- the reader
    async def run(self) -> None:
        """Read frames until the connection ends; then the channel is closed.

        The endpoint and the client each run this as their read loop. Any
        failure ends the connection cleanly: the socket is closed, pending
        calls fail, the disconnect callbacks run; nothing escapes.
        """
        receive = self.socket.receive
        feed = self.feed
        reason = "connection closed"
        try:
            while not self._closed:
                if (self._active >= self._max_active or self._sending >= self._max_sending) and not (
                    self._sending < self._max_sending and len(self._pending)
                ):
                    await self._wait_for_room()
                    continue
                feed(await receive())
        except TransportClosed as exc:
            reason = str(exc)
        except RpcMessageTooLargeError as exc:
            reason = f"closed with code 1009: {exc}"
            logger.warning("channel %s (peer %s): %s", self.id, self.socket.peer or "?", exc)
            await _quiet(self.socket.close(CLOSE_MESSAGE_TOO_BIG, "message too big"))
        except asyncio.CancelledError:
            reason = "reader cancelled"
            raise
        except Exception as exc:  # a bug of ours: never leave a half-dead connection behind
            reason = f"internal error in the read loop: {exc!r}"
            logger.exception("channel %s: read loop failed; closing the connection", self.id)
            self._mark_closed(reason)
            await _quiet(self.socket.close(CLOSE_INTERNAL_ERROR, "internal error"))
        finally:
            self._mark_closed(reason)
            await self._fire_disconnect()

    async def _wait_for_room(self) -> None:
        """Stop reading until work completes, the send side drains, or a call of ours needs its answer."""
        self._room = self._loop.create_future()
        try:
            await self._room
        finally:
            self._room = None

    def _wake(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def feed(self, frame: Union[str, bytes]) -> None:
        """Handle one received frame. Raises RpcMessageTooLargeError for an oversized one."""
        self._received += 1
        msg = self._decode(frame, self.max_message_size, self.settings.max_depth)
        kind = type(msg)
        if kind is Response:
            if not self._pending.resolve(msg.id, msg) and logger.isEnabledFor(logging.DEBUG):
                logger.debug("channel %s: answer to unknown call %r dropped", self.id, msg.id)
        elif kind is Invalid:
            self._spawn_send(encode_error(msg.id, msg.code, msg.message))
        elif kind is Notification and msg.method == CANCEL_REQUEST:
            self._cancel_incoming(msg.params)
        elif self._active < self._max_active and not self._deferred:
            self._start(msg)
        elif len(self._deferred) < self._max_active:
            self._deferred.append(msg)
        elif kind is Request:
            self._refuse(msg.id)
        elif kind is Notification:
            self._drop(msg.method)
        else:
            self._start_batch(msg, over_budget=True)

    def _start(self, msg: Any) -> None:
        """Start a call, a notification or a batch: it holds its share of the budget until done."""
        kind = type(msg)
        if kind is Request:
            task = self._spawn(self._handle_request(msg))
            if task is not None:
                self._by_id[msg.id] = task
        elif kind is Notification:
            self._spawn(self._invoke(msg.method, msg.params, None, True))
        else:
            self._start_batch(msg)

    def _start_deferred(self) -> None:
        deferred = self._deferred
        while deferred and self._active < self._max_active and not self._closed:
            self._start(deferred.popleft())

    # ------------------------------------------------------ incoming calls
    def _refuse(self, call_id: Any) -> None:
        """Over the limit while we must keep reading: say so rather than queue without bound."""
        self.refused_calls += 1
        self._spawn_send(
            encode_error(
                call_id,
                JsonRpcErrorCode.SERVER_OVERLOADED,
                f"Server overloaded: {self._active} calls in flight, the limit is {self._max_active}",
            )
        )

    def _drop(self, method: str) -> None:
        if not self.dropped_notifications:
            logger.warning(
                "channel %s (peer %s): budget full while waiting for answers; dropping notifications (%s)",
                self.id,
                self.socket.peer or "?",
                method,
            )
        self.dropped_notifications += 1

    async def _handle_request(self, req: Request) -> None:
        try:
            data = await self._invoke(req.method, req.params, req.id)
        finally:
            if self._by_id:
                self._by_id.pop(req.id, None)
        if data is not None:
            await self._send_answer(data)

    def _cancel_incoming(self, params: Any) -> None:
        """The caller gave up on a call: cancel its handler; it will not be answered."""
        call_id = params.get("id") if isinstance(params, dict) else (params[0] if params else None)
        task = self._by_id.pop(call_id, None) if _hashable(call_id) else None
        if task is not None:
            task.cancel()

    def _start_batch(self, batch: Batch, over_budget: bool = False) -> None:
        items = batch.items
        limit = self.settings.max_batch_size
        if len(items) > limit:
            self._spawn_send(
                encode_error(
                    None,
                    JsonRpcErrorCode.INVALID_REQUEST,
                    f"Invalid Request: batch of {len(items)} items, the limit is {limit}",
                )
            )
            return
        if over_budget:  # reading on only for our answers, and the queue is full: serve none of it
            self._spawn(self._handle_batch(items, True), units=0)
        else:
            self._spawn(self._handle_batch(items, False), units=len(items))

    async def _handle_batch(self, items: List[Any], over_budget: bool) -> None:
        waiting: List[Awaitable[Optional[bytes]]] = []
        parts: List[bytes] = []
        invoke = self._invoke
        for item in items:
            kind = type(item)
            if kind is Request:
                if over_budget:
                    self.refused_calls += 1
                    parts.append(
                        encode_error(item.id, JsonRpcErrorCode.SERVER_OVERLOADED, "Server overloaded: batch refused")
                    )
                else:
                    waiting.append(invoke(item.method, item.params, item.id))
            elif kind is Notification:
                if over_budget:
                    self._drop(item.method)
                else:
                    waiting.append(invoke(item.method, item.params, None, True))
            elif kind is Invalid:
                parts.append(encode_error(item.id, item.code, item.message))
            elif kind is Response:
                self._pending.resolve(item.id, item)
        if waiting:
            parts.extend(part for part in await asyncio.gather(*waiting) if part is not None)
        if parts:
            await self._send_answer(encode_batch(parts))

    # ------------------------------------------------------------ sending
    async def _send_counted(self, data: bytes) -> None:
        """Our own frames (calls, notifications) go out through here.

        They are not in the reading budget: a reader that stopped because our
        own sends are slow would stop reading the answers that let them
        finish, and both sides would wait for each other.
        """
        self._outgoing += 1
        try:
            await self._send(data)
        finally:
            self._outgoing -= 1
            self._sent += 1

    async def _send_answer(self, data: bytes) -> None:
        """Send what the peer caused (an answer, a refusal, an error reply), counted in the budget.

        If the connection is gone, the answer has nobody to go to.
        """
        self._sending += 1
        await self._send_spawned(data)

    def _spawn_send(self, data: bytes, answer: bool = True) -> None:
        """Send a frame nobody awaits: an error reply (``answer``), or a cancel of ours.

        An answer is counted now, not when its task first runs: the reader may
        take many frames before any task runs, and must see each at once.
        """
        if answer:
            self._sending += 1
            self._spawn(self._send_spawned(data), units=0)
        else:
            self._spawn(self._send_quietly(data), units=0)

    async def _send_spawned(self, data: bytes) -> None:
        try:
            await self._send(data)
        except TransportClosed:
            pass
        finally:
            self._sending -= 1
            self._sent += 1
            if self._room is not None:
                self._wake()

    async def _send_quietly(self, data: bytes) -> None:
        try:
            await self._send_counted(data)
        except TransportClosed:
            pass

    # ----------------------------------------------------------- closing
    def _on_max_duration(self) -> None:
        logger.info("channel %s reached max_connection_duration; closing", self.id)
        _spawn_background(self._loop, self.close(CLOSE_NORMAL, "max connection duration reached"))

    def _mark_closed(self, reason: str) -> None:
        """Fail every pending call at once and stop every handler; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._closed_event.set()
        self._wake()
        for handle in (self._sweep_handle, self._duration_handle):
            if handle is not None:
                handle.cancel()
        if self._watchdog is not None:
            self._watchdog.stop()
        message = f"channel {self.id} closed before the answer arrived ({reason})"
        self._pending.fail_all(lambda: RpcChannelClosedError(message))
        self._saved.clear()
        self._by_id.clear()
        self._deferred.clear()
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

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without a closing handshake (the peer is stalled)."""
        self._mark_closed(reason)
        self.socket.abort()

    # ------------------------------------------------------------ helpers
    def _spawn(self, coro: Coroutine[Any, Any, Any], units: int = 1) -> Optional[asyncio.Task[Any]]:
        """Start incoming work as a task that holds ``units`` of the budget until done."""
        if _EAGER:
            # Python 3.12+: run the handler's first step now; one that never
            # suspends (most do not) finishes here, never scheduled, never tracked.
            task = asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg]
            if task.done():
                return None
        else:
            task = self._loop.create_task(coro)
        self._tasks.add(task)
        if units:
            self._active += units
            if units == 1:
                task.add_done_callback(self._done_one)
            else:
                task.add_done_callback(lambda t: self._done(t, units))
        else:
            task.add_done_callback(self._tasks.discard)
        return task

    def _done_one(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._active -= 1
        if self._deferred:
            self._start_deferred()
        if self._room is not None:
            self._wake()

    def _done(self, task: asyncio.Task[Any], units: int) -> None:
        self._tasks.discard(task)
        self._active -= units
        if self._deferred:
            self._start_deferred()
        if self._room is not None:
            self._wake()


class _Watchdog:
    """One timer per connection for the timeouts that need a clock: send, idle, receive.

    It ticks every quarter of the shortest timeout set and compares progress
    counters with the previous tick, so the hot path pays one integer increment
    per frame and never reads the clock.
    """

    __slots__ = ("channel", "handle", "idle_for", "last_received", "last_sent", "receiving_for", "stalled_for", "tick")

    def __init__(self, channel: RpcChannel, tick: float) -> None:
        self.channel = channel
        self.tick = tick
        self.stalled_for = self.idle_for = self.receiving_for = 0.0
        self.last_received = self.last_sent = -1
        self.handle: Optional[asyncio.TimerHandle] = channel._loop.call_later(tick, self._check)

    @classmethod
    def start(cls, channel: RpcChannel) -> Optional[_Watchdog]:
        s = channel.settings
        timeouts = [t for t in (s.send_timeout, s.idle_timeout, s.message_receive_timeout) if t]
        return cls(channel, min(timeouts) / 4) if timeouts else None

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _check(self) -> None:
        ch = self.channel
        s = ch.settings
        tick = self.tick
        received_any = ch._received != self.last_received
        sent_any = ch._sent != self.last_sent
        self.last_received, self.last_sent = ch._received, ch._sent
        peer = ch.socket.peer or "?"
        # A peer that takes none of what we send.
        busy = ch._sending or ch._outgoing
        self.stalled_for = self.stalled_for + tick if (busy and not sent_any) else 0.0
        if s.send_timeout and self.stalled_for >= s.send_timeout:
            logger.warning("channel %s: peer %s read nothing for %.3g s; disconnecting", ch.id, peer, s.send_timeout)
            ch.abort(f"send timeout: the peer read nothing for {s.send_timeout} s")
            _spawn_background(ch._loop, ch._fire_disconnect())
            return
        # A message started and not finished (slowloris); not while we chose not to read.
        if ch._room is None and not received_any and ch.socket.receiving():
            self.receiving_for += tick
        else:
            self.receiving_for = 0.0
        if s.message_receive_timeout and self.receiving_for >= s.message_receive_timeout:
            logger.warning(
                "channel %s: peer %s took over %.3g s to send one message; closing",
                ch.id,
                peer,
                s.message_receive_timeout,
            )
            _spawn_background(ch._loop, _close_then_abort(ch, CLOSE_POLICY_VIOLATION, "message receive timeout"))
            return
        # Nothing either way and nothing in flight.
        idle = not (received_any or sent_any or ch._active or busy or len(ch._pending))
        self.idle_for = self.idle_for + tick if idle else 0.0
        if s.idle_timeout and self.idle_for >= s.idle_timeout:
            logger.info("channel %s: idle for %.3g s; closing", ch.id, s.idle_timeout)
            _spawn_background(ch._loop, _close_then_abort(ch, CLOSE_GOING_AWAY, "idle timeout"))
            return
        if not ch._closed:
            self.handle = ch._loop.call_later(tick, self._check)


async def _close_then_abort(channel: RpcChannel, code: int, reason: str) -> None:
    """A closing handshake if the peer takes it within a second; else drop the socket."""
    try:
        await asyncio.wait_for(channel.close(code, reason), 1.0)
    except (asyncio.TimeoutError, Exception):
        channel.abort(reason)


#: Tasks that must outlive the channel's own cancellation (closing, error
#: callbacks); kept referenced so the loop does not garbage-collect them mid-run.
_background: Set[asyncio.Task[Any]] = set()


def _spawn_background(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
    task = loop.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float)) or value is None


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
