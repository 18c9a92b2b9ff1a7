"""RpcChannel: one JSON-RPC 2.0 conversation over one connection, both ways.

This module keeps the lifecycle, the read loop with its budget, and closing.
Incoming calls are run by :mod:`~fastwsrpc.dispatch`; outgoing calls live in
:mod:`~fastwsrpc.outgoing`; fastapi-ws-rpc's promise store in
:mod:`~fastwsrpc.compat`. The channel knows nothing of FastAPI or
``websockets``: it reads and writes through a :class:`~fastwsrpc.transport.Transport`.

The budget of one connection (see ``docs/architecture.md`` and the README's
budget table). The rule is HTTP/2's: bound the work, never stop hearing the peer.

* Incoming work running (calls, notifications, batch items, each until its
  answer is handed to the socket) is at most ``max_pending_requests``.
* Past it, work waits in a queue of at most ``max_queued_requests`` messages;
  past that, or past the byte budget, a call is refused at once with -32001
  (``data``: the limit and ``retry_after``).
* ``max_connection_bytes`` bounds the bytes one connection holds: frames of
  work running or queued, answers handed to the socket and not yet taken,
  parked call metadata. A single message up to ``max_message_size`` is always
  admitted to an empty budget.
* Pings, ``$/cancelRequest`` (a queued call is dropped, a running one
  cancelled), answers to our own calls, stream credits and the close are read
  and acted on whatever the budget says.
* Reading stops for two reasons only: the peer does not read what we send
  (``max_send_queue_size`` answers, or the byte budget, waiting for the
  socket), or a notification past the full queue (it has no answer to refuse
  with; the keepalive still drops a dead peer). While our own handlers wait for
  answers from this peer, such a notification is dropped instead
  (``dropped_notifications``).

Per message: one decode, one dict lookup (method or pending call), one task
per incoming call that does not finish at once, one encode; no log string is
built unless its level is on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from contextvars import Context, copy_context
from types import ModuleType
from typing import Any, Awaitable, Deque, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple, Union

from . import _accel
from .budget import IncomingWork
from .callbacks import Callbacks, OnConnectCallback, OnDisconnectCallback, OnErrorCallback
from .compat import PromiseStore, RpcPromise
from .config import RpcDebugConfig, RpcSettings
from .dispatch import Dispatcher
from .errors import RpcChannelClosedError, RpcMessageTooLargeError
from .interceptors import RpcInterceptor
from .logger import get_logger
from .methods import RpcMethodsBase
from .outgoing import BatchCall, OutgoingCalls, Params, RpcCaller
from .protocol import Invalid, Notification, Response, encode_error
from .streams import RpcStream, StreamSide, _Producer
from .topics import SUBSCRIBE, TopicHub
from .transport import CLOSE_INTERNAL_ERROR, CLOSE_MESSAGE_TOO_BIG, CLOSE_NORMAL, Transport, TransportClosed
from .watchdog import Watchdog, spawn_background

__all__ = ["BatchCall", "OnConnectCallback", "OnDisconnectCallback", "OnErrorCallback", "Params", "RpcChannel"]
__all__ += ["RpcCaller", "RpcPromise"]

logger = get_logger("channel")


#: Frames longer than this are checked for an oversized batch before they are decoded.
_BIG_FRAME = 64 * 1024


class RpcChannel(IncomingWork, OutgoingCalls, StreamSide, PromiseStore, Callbacks):
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
        topics: Optional[TopicHub] = None,
        interceptors: Sequence[RpcInterceptor] = (),
        peer_features: FrozenSet[str] = frozenset(),
        peer_max_pending: Optional[int] = None,
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
        builtins = None
        if topics is not None:
            hub = topics

            def subscribe(topics: Any, on_slow: Optional[str] = None) -> Any:
                return hub.subscribe(self, topics, on_slow)

            builtins = {SUBSCRIBE: subscribe}
        self._interceptors = tuple(interceptors)
        #: Features both sides declared in the handshake (``"meta"``: calls carry ``meta``).
        self.peer_features = peer_features
        #: Meta of calls read but not started yet, with the bytes of its frame (in the budget).
        self._parked_meta: Dict[Any, Tuple[Dict[str, Any], int]] = {}
        self._dispatcher = Dispatcher(
            self.methods,
            settings.discovery,
            settings.debug_mode,
            self._internal_error,
            builtins,
            self._interceptors,
            self,
        )
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
        # Our calls in flight stay under the peer's advertised limit (and our own
        # table's); past it they wait locally, in order (outgoing.py).
        window = settings.max_pending_requests
        if peer_max_pending is not None and 0 < peer_max_pending < window:
            window = peer_max_pending
        self._window = window
        self._reserved = 0  # slots given to woken waiters, not yet registered
        self._slot_waiters: Deque[asyncio.Future[None]] = deque()
        self._max_queued_calls = settings.max_queued_calls
        self._saved: Dict[str, RpcPromise] = {}
        self._sweep_handle: Optional[asyncio.TimerHandle] = None
        # The budget (see the module docstring).
        self._tasks: Set[asyncio.Task[Any]] = set()
        self._by_id: Dict[Any, Optional[asyncio.Task[Any]]] = {}  # calls in flight (None: queued), for $/cancelRequest
        self._active = 0  # incoming work units in flight
        self._sending = 0  # answers handed to the socket, not yet taken (in the budget)
        self._outgoing = 0  # our own frames handed to the socket, not yet taken
        self._nested = 0  # our calls that our own running handlers wait for
        self._max_active = settings.max_pending_requests
        self._max_queued = settings.max_queued_requests
        self._max_bytes = settings.max_connection_bytes
        self._bytes = 0  # bytes held for the peer: work running or queued, answers unsent, parked meta
        self._max_sending = settings.max_send_queue_size
        self._raise_on_error = settings.raise_on_error
        self._room: Optional[asyncio.Future[None]] = None  # the paused reader waits on it
        self._notes: Set[asyncio.Task[Any]] = set()  # notification handlers: not cancelled at close
        self._cancelled: Dict[Any, int] = {}  # calls cancelled while queued in a run, by id (budget.py)
        self._reader_context: Context = copy_context()
        self._idle_runner: Optional[asyncio.Future[Any]] = None  # a run's task waiting for the next run
        self._open_run: Optional[List[Any]] = None  # calls and notifications the reader adds to a run (budget.py)
        self._producers: Dict[Any, _Producer] = {}  # streams we produce, by id
        self._consumers: Dict[Any, RpcStream] = {}  # streams we consume, by id
        self._early_credits: Dict[Any, int] = {}
        self._told_streams: Dict[Any, None] = {}  # unknown stream ids we sent $/stream.cancel for (streams.py)
        self._stream_names = self._dispatcher.stream_names
        self._deferred: Deque[Any] = deque()  # (message, bytes) past the running budget (module docstring)
        #: Notifications dropped because they came past a full queue while our
        #: own handlers waited for answers from this peer (the reader could not stop).
        self.dropped_notifications = 0
        #: Notifications queued past the queue's bound (the reader stopped until it drained).
        self.overflowed_notifications = 0
        #: Calls refused with -32001: past the queue or the byte budget.
        self.refused_calls = 0
        # Progress counters, read by the watchdog (cheaper than a clock per frame).
        self._received = 0
        self._sent = 0
        self._connect_callbacks: List[OnConnectCallback] = list(connect_callbacks or ())
        self._connect_tasks: List[asyncio.Task[Any]] = []
        self._disconnect_callbacks: List[OnDisconnectCallback] = list(disconnect_callbacks or ())
        self._error_callbacks: List[OnErrorCallback] = list(error_callbacks or ())
        self._closed_event = asyncio.Event()
        self._close_reason = ""
        self._closed = False
        self._started_at = self._loop.time()
        self._duration_handle: Optional[asyncio.TimerHandle] = None
        if settings.max_connection_duration:
            self._duration_handle = self._loop.call_later(settings.max_connection_duration, self._on_max_duration)
        self._watchdog: Optional[Watchdog] = Watchdog.start(self)
        self.other = RpcCaller(self)
        self._context: Dict[str, Any] = dict(context or {})

    # ----------------------------------------------------------------- state
    @property
    def context(self) -> Dict[str, Any]:
        """What the endpoint or client knows of this connection (``websocket``, path parameters)."""
        return self._context

    def is_closed(self) -> bool:
        """Whether the connection has ended (pending calls have failed by then)."""
        return self._closed

    @property
    def close_reason(self) -> str:
        """Why the channel closed (``""`` while open)."""
        return self._close_reason

    async def wait_until_closed(self) -> bool:
        """Wait until the connection ends; returns True."""
        await self._closed_event.wait()
        return True

    def get_connection_age(self) -> float:
        """Seconds since this connection opened."""
        return self._loop.time() - self._started_at

    def get_remaining_duration(self) -> Optional[float]:
        """Seconds left before ``max_connection_duration`` closes it (``None``: no limit)."""
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
    def queued_count(self) -> int:
        """Incoming calls and notifications waiting past ``max_pending_requests``."""
        return len(self._deferred)

    @property
    def held_bytes(self) -> int:
        """Bytes held for the peer against ``max_connection_bytes``."""
        return self._bytes

    @property
    def reading_paused(self) -> bool:
        """Whether the reader has stopped: the peer does not read our answers, or notifications overflowed."""
        return self._room is not None

    # ----------------------------------------------------------- the reader
    async def run(self) -> None:
        """Read frames until the connection ends; then the channel is closed.

        The endpoint and the client each run this as their read loop. Any
        failure ends the connection cleanly: the socket is closed, pending
        calls fail, the disconnect callbacks run; nothing escapes.
        """
        socket = self.socket
        receive = socket.receive
        feed = self.feed
        # A transport that can hand us messages straight from the socket (the
        # native one) does so while the budget has room: no wake-up of this
        # task per read. Work it starts runs in this task's context, as the
        # work of messages read here does.
        pushed = hasattr(socket, "push")
        if pushed:
            self._reader_context = copy_context()
        reason = "connection closed"
        try:
            while not self._closed:
                if self._must_pause():
                    await self._wait_for_room()
                    continue
                if pushed:
                    socket.push = self._push  # type: ignore[attr-defined]
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
            if pushed:
                socket.push = None  # type: ignore[attr-defined]
            self._mark_closed(reason)
            await self._fire_disconnect()

    def _push(self, frame: bytes) -> None:
        """A message straight from the transport (see ``run``); stops the pushing when the budget is full."""
        if self._closed:  # the reader reads no more either
            self.socket.push = None  # type: ignore[attr-defined]
            return
        self._reader_context.run(self.feed, frame)
        if self._closed or self._must_pause():
            self.socket.push = None  # type: ignore[attr-defined]  # queue from here; the reader decides

    def _must_pause(self) -> bool:
        """Whether the reader must stop: never because handlers are busy (see the module docstring).

        Only a peer that does not read our answers (their count or bytes at
        the limit), or notifications queued past the queue's bound.
        """
        if self._sending < self._max_sending and self._bytes <= self._max_bytes:
            return len(self._deferred) > self._max_queued
        return True

    async def _wait_for_room(self) -> None:
        """Stop reading until the send side drains or the queue is back under its bound."""
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
        size = len(frame)
        if size > _BIG_FRAME and self._batch_too_big(frame):
            return
        msg = self._decode(frame, self.max_message_size, self.settings.max_depth)
        kind = type(msg)
        if kind is Response:
            if not self._pending.resolve(msg.id, msg) and logger.isEnabledFor(logging.DEBUG):
                logger.debug("channel %s: answer to unknown call %r dropped", self.id, msg.id)
        elif kind is Invalid:
            self._spawn_send(encode_error(msg.id, msg.code, msg.message))
        elif kind is Notification and msg.method[:2] == "$/" and self._control(msg, size):
            pass  # cancellation and stream control: handled inline, never queued
        else:
            self._admit(msg, size)

    def _take_meta(self, call_id: Any) -> Optional[Dict[str, Any]]:
        """The meta parked for ``call_id`` (its bytes leave the budget), or None."""
        parked = self._parked_meta.pop(call_id, None)
        if parked is None:
            return None
        self._bytes -= parked[1]
        return parked[0]

    # ----------------------------------------------------------- closing
    def _on_max_duration(self) -> None:
        logger.info("channel %s reached max_connection_duration; closing", self.id)
        spawn_background(self._loop, self.close(CLOSE_NORMAL, "max connection duration reached"))

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
        self._fail_slot_waiters(lambda: RpcChannelClosedError(message))
        self._saved.clear()
        self._by_id.clear()
        self._cancelled.clear()
        self._deferred.clear()
        self._parked_meta.clear()
        self._close_streams()
        idle, self._idle_runner = self._idle_runner, None
        if idle is not None and not idle.done():
            idle.set_result(None)
        current = asyncio.current_task()
        notes = self._notes
        for task in list(self._tasks):
            # A method may close its own channel; a notification already read
            # runs to its end (its sender counts on it, as fastapi-ws-rpc does).
            if task is not current and task not in notes:
                task.cancel()

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection; pending calls fail with RpcChannelClosedError.

        The channel is closed whatever happens; an error from the socket's own
        close is raised after the disconnect callbacks ran (as fastapi-ws-rpc 1.2).
        """
        self._mark_closed(reason or "closed locally")
        try:
            await self.socket.close(code, reason)
        finally:
            await self._fire_disconnect()

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without a closing handshake (the peer is stalled)."""
        self._mark_closed(reason)
        self.socket.abort()


async def _quiet(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # the socket is already gone; nothing left to tell it
        pass
