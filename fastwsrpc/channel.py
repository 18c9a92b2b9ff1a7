"""RpcChannel: one JSON-RPC 2.0 conversation over one connection, both ways.

A thin asyncio facade: it composes collaborators that never see it (protocol,
budget, runner, outgoing calls, streams, callbacks, promise store, watchdog; see
docs/architecture.md), owns the read loop and the closing, and knows no transport.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextvars import copy_context
from types import ModuleType
from typing import Any, Callable, Coroutine, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from . import _accel
from .api import ChannelApi
from .budget import Budget
from .callbacks import Callbacks, OnConnectCallback, OnDisconnectCallback, OnErrorCallback
from .compat import PromiseStore, RpcPromise
from .config import RpcDebugConfig, RpcSettings
from .dispatch import Dispatcher
from .errors import RpcChannelClosedError, RpcMessageTooLargeError
from .interceptors import RpcInterceptor
from .logger import get_logger
from .methods import RpcMethodsBase
from .outgoing import BatchCall, OutgoingCalls, Params, RpcCaller
from .protocol import (
    _BIG_FRAME,
    CONTROL_METHODS,
    STREAM_ITEM,
    Batch,
    CancelRequest,
    MetaNotice,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcProtocol,
)
from .runner import HandlerRunner
from .sessions import Session
from .state import ConnectionState
from .streams import StreamRegistry
from .topics import TopicHub
from .transport import CLOSE_INTERNAL_ERROR, CLOSE_MESSAGE_TOO_BIG, CLOSE_NORMAL, Transport, TransportClosed
from .watchdog import Watchdog, quietly, spawn_background

__all__ = ["BatchCall", "OnConnectCallback", "OnDisconnectCallback", "OnErrorCallback", "Params", "RpcCaller"]
__all__ += ["RpcChannel", "RpcPromise"]

logger = get_logger("channel")

#: The ``(max_message_size, max_depth)`` of the channels, one tuple per pair shared by all (read per frame).
_LIMITS: Dict[Tuple[int, int], Tuple[int, int]] = {}


class RpcChannel(ChannelApi):
    """A bidirectional JSON-RPC 2.0 channel over one transport.

    Settings come as one :class:`~fastwsrpc.config.RpcSettings` (``settings=``),
    or as the legacy keyword names of its fields; an unknown keyword is a
    ``TypeError``. ``context`` is what the endpoint knows of the connection.
    ``speedups``: the hot-path twin. ``peer_max_pending``: the limit the peer
    advertised (our calls stay under it). ``session``: the client's session,
    whose idempotent calls run once. ``sync_channel_id`` has no effect.
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
        session: Optional[Session] = None,
        **limits: Any,
    ) -> None:
        s = RpcSettings.resolve(
            settings,
            debug=debug_config,
            owner="RpcChannel",
            default_response_timeout=default_response_timeout,
            **limits,
        )
        self.settings = s
        loop = self._loop = asyncio.get_running_loop()
        self.id: str = channel_id or uuid.uuid4().hex
        self.socket = socket
        self.subprotocol = subprotocol
        #: Features both sides declared in the handshake (``"meta"``: calls carry ``meta``).
        self.peer_features = peer_features
        self.methods = (methods if methods is not None else RpcMethodsBase())._copy_()
        self.methods._set_channel_(self)
        self._context: Dict[str, Any] = dict(context or {})
        self._state = state = ConnectionState()
        self._budget = budget = Budget(s)
        self._closed_event: Optional[asyncio.Event] = None  # made by the first wait_until_closed
        self._started_at = loop.time()
        impl: Any = speedups if speedups is not None else _accel.impl
        self._protocol = RpcProtocol(impl, s.max_message_size, s.max_depth, s.max_batch_size)
        self._callbacks = Callbacks(self, loop, self._spawn, connect_callbacks, disconnect_callbacks, error_callbacks)
        self._dispatcher = dispatcher = Dispatcher(
            self.methods, s, self._callbacks.internal_error, topics, interceptors, self, budget
        )
        pending = impl.PendingTable(s.max_pending_requests)
        self._runner = runner = HandlerRunner(
            loop, budget, state, dispatcher.invoke, socket.send, pending, self, self._describe
        )
        runner.bind(session)
        # What an idle connection never uses is made on first use: the stream registry (``_streams``).
        runner.stream_names, runner.start_stream = dispatcher.stream_names, self._start_stream
        self._registry: Optional[StreamRegistry] = None
        self._admit, self._decode = runner.admit, impl.decode  # per frame
        self._limits = _LIMITS.setdefault((s.max_message_size, s.max_depth), (s.max_message_size, s.max_depth))
        self._calls = OutgoingCalls(
            loop, state, budget, pending, s, self.id, self, runner, interceptors, peer_features, peer_max_pending
        )
        self._promises: Optional[PromiseStore] = None
        self._duration_handle = (
            loop.call_later(s.max_connection_duration, self._on_max_duration) if s.max_connection_duration else None
        )
        tick = Watchdog.tick_for(s)
        self._watchdog = Watchdog(loop, s, tick, state, budget, socket, self) if tick else None
        self.other = RpcCaller(self)

    @property  # ChannelApi's attribute, made on first use
    def _streams(self) -> StreamRegistry:  # type: ignore[override]
        """Both ends of this connection's streams: made by the first stream, either way."""
        if self._registry is None:
            args = (self._loop, self._state, self._runner, self._calls, self._dispatcher, self.socket.send, self)
            self._registry = StreamRegistry(*args)
        return self._registry

    def _start_stream(self, req: Request, size: int) -> None:
        self._streams.start_stream(req, size)  # the registry takes the runner's start_stream over from here

    # ----------------------------------------------------------- the reader
    async def run(self, park: Optional[Callable[[], None]] = None) -> None:
        """Read frames until the connection ends; any failure closes it cleanly (nothing escapes).

        ``park``, with a transport that pushes messages and parks (the native one): when nothing is
        left for the reader, return at once, the channel still open (messages go on being pushed);
        the transport calls ``park()`` once there is (a message queued, the end), which runs ``run``
        again in a :meth:`reader_task`. An idle connection holds no task and no frame (2 kB of each).
        """
        socket, budget, state = self.socket, self._budget, self._state
        receive, feed = socket.receive, self.feed
        # A transport that can hand us messages straight from the socket (the
        # native one) does so while we read: no wake-up of this task per read.
        pushed = hasattr(socket, "push")
        parks = pushed and park is not None and hasattr(socket, "park")
        self._reader_context = copy_context()
        reason, parked = "connection closed", False
        try:
            while not state.closed:
                if budget.must_pause():
                    await budget.wait_for_room(self._loop)
                    continue
                if pushed:
                    socket.push = self._push  # type: ignore[attr-defined]
                    if parks and socket.park(park):  # type: ignore[attr-defined]
                        parked = True  # nothing ends
                        return
                feed(await receive())
        except TransportClosed as exc:
            reason = str(exc)
        except RpcMessageTooLargeError as exc:
            reason = f"closed with code 1009: {exc}"
            logger.warning("%s: %s", self._describe(), exc)
            await quietly(socket.close(CLOSE_MESSAGE_TOO_BIG, "message too big"))
        except asyncio.CancelledError:
            reason = "reader cancelled"
            raise
        except Exception as exc:  # a bug of ours: never leave a half-dead connection behind
            reason = f"internal error in the read loop: {exc!r}"
            logger.exception("channel %s: read loop failed; closing the connection", self.id)
            self._mark_closed(reason)
            await quietly(socket.close(CLOSE_INTERNAL_ERROR, "internal error"))
        finally:
            if not parked:
                if pushed:
                    socket.push = None  # type: ignore[attr-defined]
                self._mark_closed(reason)
                await self._callbacks.fire_disconnect()

    def reader_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task for ``coro`` in a copy of the reader's context (``run`` going on after it parked)."""
        return self._reader_context.copy().run(self._loop.create_task, coro)

    def _push(self, frame: bytes) -> None:
        """A message straight from the transport (see ``run``); stops the pushing when the reader must pause.

        A stream's item goes to its consumer from here: it starts nothing (it wakes the consumer's
        task, which has a context of its own), so only the rest runs in the reader's context.
        """
        state = self._state
        if not state.closed:
            size = len(frame)
            msg = self._decode(frame, self._limits[0], self._limits[1]) if size <= _BIG_FRAME else None
            if type(msg) is Notification and msg.method == STREAM_ITEM and type(msg.params) is dict:
                state.received += 1
                if (self._registry if self._registry is not None else self._streams).on_item_params(msg.params):
                    return  # taken by its consumer: the budget is as it was, no need to read it
            else:
                self._reader_context.run(self._feed_decoded, frame, msg, size)
        b = self._budget  # Budget.must_pause, inlined: this runs for every frame the native transport reads
        if state.closed or b.sending >= b.max_sending or b.held > b.max_bytes or len(b.deferred) > b.max_queued:
            self.socket.push = None  # type: ignore[attr-defined]  # queue from here; the reader decides

    def feed(self, frame: Union[str, bytes]) -> None:
        """Handle one received frame. Raises RpcMessageTooLargeError for an oversized one."""
        size = len(frame)
        msg = self._decode(frame, self._limits[0], self._limits[1]) if size <= _BIG_FRAME else None
        self._feed_decoded(frame, msg, size)

    def _feed_decoded(self, frame: Union[str, bytes], msg: Any, size: int) -> None:
        """``feed`` after the decode: ``msg``, None for a frame over ``_BIG_FRAME`` (the protocol reads those)."""
        self._state.received += 1
        if msg is not None:  # the hot path: a call or a notification, decoded once, started at once
            kind = type(msg)
            if kind is Request or (kind is Notification and msg.method not in CONTROL_METHODS):
                return self._admit(msg, size)
            if kind is Notification and msg.method == STREAM_ITEM and type(msg.params) is dict:
                (self._registry if self._registry is not None else self._streams).on_item_params(msg.params)
                return
            event = self._protocol.event_of(msg)
        else:
            event = self._protocol.receive(frame)
        kind = type(event)
        if kind is Response:
            if not self._calls.pending.resolve(event.id, event) and logger.isEnabledFor(logging.DEBUG):  # type: ignore[union-attr]
                logger.debug("channel %s: answer to unknown call %r dropped", self.id, event.id)  # type: ignore[union-attr]
        elif kind is Request or kind is Notification or kind is Batch:
            self._admit(event, size)
        elif kind is CancelRequest:
            self._runner.cancel(event.id)  # type: ignore[union-attr]
        elif kind is ProtocolError:
            self._runner.spawn_send(event.frame)  # type: ignore[union-attr]
        elif kind is MetaNotice:
            self._dispatcher.park_meta(event.id, event.meta, size)  # type: ignore[union-attr]
        elif event is not None:
            (self._registry if self._registry is not None else self._streams).on_event(event)

    def _store(self) -> PromiseStore:
        """fastapi-ws-rpc's promise store (``async_call``), made on first use."""
        if self._promises is None:
            self._promises = PromiseStore(self._loop, self._state, self._calls, self._runner, self.promise_ttl)
        return self._promises

    # ----------------------------------------------------------- closing
    def _mark_closed(self, reason: str) -> None:
        """Fail every pending call at once and stop every handler; idempotent."""
        if not self._state.close(reason):
            return
        if self._closed_event is not None:
            self._closed_event.set()
        self._budget.wake()
        if self._duration_handle is not None:
            self._duration_handle.cancel()
        if self._watchdog is not None:
            self._watchdog.stop()
        message = f"channel {self.id} closed before the answer arrived ({reason})"
        self._calls.pending.fail_all(lambda: RpcChannelClosedError(message))
        self._calls.fail_waiters(lambda: RpcChannelClosedError(message))
        if self._promises is not None:
            self._promises.close()
        self._dispatcher.forget_meta()
        if self._registry is not None:
            self._registry.close()
        self._runner.close()

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close; pending calls fail. The socket's own error is raised after the disconnect callbacks."""
        self._mark_closed(reason or "closed locally")
        try:
            await self.socket.close(code, reason)
        finally:
            await self._callbacks.fire_disconnect()

    def abort(self, reason: str) -> None:
        """Drop the connection at once, without a closing handshake (the peer is stalled)."""
        self._mark_closed(reason)
        self.socket.abort()

    def _on_max_duration(self) -> None:
        logger.info("channel %s reached max_connection_duration; closing", self.id)
        spawn_background(self._loop, self.close(CLOSE_NORMAL, "max connection duration reached"))

    def _in_flight(self) -> bool:
        return bool(len(self._calls.pending) or (self._registry is not None and self._registry.consumers))

    def _let_go(self) -> None:  # nothing came for a watchdog's tick (see Watchdog.on_turn)
        self._runner.let_go()

    def _spawn(self, coro: Any, units: int = 1) -> Any:
        return self._runner.spawn(coro, units)

    def _describe(self) -> str:
        return f"channel {self.id} (peer {self.socket.peer or '?'})"
