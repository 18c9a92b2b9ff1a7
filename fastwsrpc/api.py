"""The public surface of a channel, each method forwarding to one collaborator.

:class:`ChannelApi` is the base of :class:`~fastwsrpc.channel.RpcChannel`: what
a user calls (our calls, streams, topics), fastapi-ws-rpc's promise API and
callback lists. It reaches exactly the collaborators it declares below
(``_calls``, ``_streams``, ``_callbacks`` and ``_store()``); the channel builds
them and owns the read loop and the closing. Kept apart so that ``channel.py``
holds the life of a connection and nothing else.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Dict, Iterable, List, Mapping, Optional, Type

from .budget import Budget
from .callbacks import Callbacks, OnConnectCallback, OnDisconnectCallback, OnErrorCallback, remove
from .compat import PromiseStore, RpcPromise
from .config import RpcDebugConfig, RpcSettings
from .outgoing import _DEFAULT, DEFAULT_STREAM_BUFFER, BatchCall, OutgoingCalls, Params
from .protocol import Response
from .state import ConnectionState
from .streams import RpcStream, StreamRegistry
from .topics import SUBSCRIBE, TopicEvent

__all__ = ["ChannelApi"]


class ChannelApi:
    """What a user calls on a channel; see the module docstring."""

    _callbacks: Callbacks
    _calls: OutgoingCalls
    _streams: StreamRegistry
    #: The stream registry once made (``_streams`` makes it on first use; an idle connection has none).
    _registry: Optional[StreamRegistry]
    _state: ConnectionState
    _budget: Budget
    _context: Dict[str, Any]
    _closed_event: Optional[asyncio.Event]
    settings: RpcSettings
    _loop: asyncio.AbstractEventLoop
    _started_at: float

    @property
    def context(self) -> Dict[str, Any]:
        """What the endpoint or client knows of this connection (``websocket``, path parameters)."""
        return self._context

    def is_closed(self) -> bool:
        """Whether the connection has ended (pending calls have failed by then)."""
        return self._state.closed

    @property
    def close_reason(self) -> str:
        """Why the channel closed (``""`` while open)."""
        return self._state.reason

    async def wait_until_closed(self) -> bool:
        """Wait until the connection ends; returns True."""
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
            if self._state.closed:
                self._closed_event.set()
        await self._closed_event.wait()
        return True

    # fastapi-ws-rpc's attribute names: views of the settings (properties: one dict less per connection).
    @property
    def default_response_timeout(self) -> Optional[float]:
        """Timeout of our calls that give none (``None``: wait as long as the connection lives)."""
        return self._calls.default_response_timeout

    @default_response_timeout.setter
    def default_response_timeout(self, value: Optional[float]) -> None:
        self._calls.default_response_timeout = value

    @property
    def max_pending_requests(self) -> int:
        """The peer's calls that run at once (``RpcSettings.max_pending_requests``)."""
        return self.settings.max_pending_requests

    @property
    def max_message_size(self) -> int:
        """The largest frame accepted, in bytes."""
        return self.settings.max_message_size

    @property
    def max_connection_duration(self) -> Optional[float]:
        """The age at which the connection is closed (``None``: never)."""
        return self.settings.max_connection_duration

    @property
    def promise_ttl(self) -> float:
        """Seconds an ``async_call`` answer is kept uncollected."""
        return self.settings.promise_ttl

    @property
    def discovery(self) -> bool:
        """Whether ``rpc.discover`` answers."""
        return self.settings.discovery

    @property
    def debug_config(self) -> RpcDebugConfig:
        """Whether error answers reveal exception details."""
        return RpcDebugConfig(debug_mode=self.settings.debug_mode)

    def get_connection_age(self) -> float:
        """Seconds since this connection opened."""
        return self._loop.time() - self._started_at

    def get_remaining_duration(self) -> Optional[float]:
        """Seconds left before ``max_connection_duration`` closes it (``None``: no limit)."""
        limit = self.max_connection_duration
        return None if limit is None else max(0.0, limit - self.get_connection_age())

    # Counters, for monitoring and tests (see the README's budget table).
    @property
    def pending_count(self) -> int:
        """Our calls waiting for an answer."""
        return len(self._calls.pending)

    @property
    def running_count(self) -> int:
        """The peer's calls and notifications running (a batch counts its items)."""
        return self._budget.active

    @property
    def sending_count(self) -> int:
        """Answers handed to the socket and not yet taken by it."""
        return self._budget.sending

    @property
    def queued_count(self) -> int:
        """The peer's calls and notifications waiting past ``max_pending_requests``."""
        return len(self._budget.deferred)

    @property
    def held_bytes(self) -> int:
        """Bytes held for the peer, against ``max_connection_bytes``."""
        return self._budget.held

    @property
    def reading_paused(self) -> bool:
        """Whether the reader has stopped: the peer does not read our answers, or notifications overflowed."""
        return self._budget.room is not None

    @property
    def refused_calls(self) -> int:
        """Calls refused with -32001: past the queue or the byte budget."""
        return self._budget.refused_calls

    @property
    def dropped_notifications(self) -> int:
        """Notifications dropped past a full queue while our handlers waited for this peer."""
        return self._budget.dropped_notifications

    @property
    def overflowed_notifications(self) -> int:
        """Notifications queued past the queue's bound (the reader stopped until it drained)."""
        return self._budget.overflowed_notifications

    @property
    def stream_count(self) -> int:
        """Streams open on this connection, both ways (0 once every stream has ended)."""
        registry = self._registry
        return len(registry) if registry is not None else 0

    def _store(self) -> PromiseStore:  # pragma: no cover - the channel defines it
        raise NotImplementedError

    def _mark_closed(self, reason: str) -> None:  # pragma: no cover - the channel defines it
        raise NotImplementedError

    def async_call(self, name: str, args: Params = None, call_id: Any = None) -> RpcPromise:
        """Start a call without waiting; the answer is kept until collected.

        ``get_saved_response(call_id)`` or ``await promise.wait()`` gives the
        response. Entries not collected are dropped after ``promise_ttl`` seconds.
        """
        return self._store().async_call(name, args, call_id)

    def get_saved_promise(self, call_id: Any) -> Optional[RpcPromise]:
        """The promise of an ``async_call`` by its id, if still kept."""
        return self._store().get_saved_promise(call_id)

    def get_saved_response(self, call_id: Any) -> Optional[Response]:
        """The answer of an ``async_call`` if it has arrived (``None`` otherwise)."""
        return self._store().get_saved_response(call_id)

    def clear_saved_call(self, call_id: Any) -> None:
        """Forget an ``async_call``'s answer (collected, or no longer wanted)."""
        self._store().clear_saved_call(call_id)

    def add_connect_callback(self, callback: OnConnectCallback) -> None:
        """Run ``callback(channel)`` when this channel's connection opens."""
        self._callbacks.connect.append(callback)

    def remove_connect_callback(self, callback: OnConnectCallback) -> bool:
        """Forget a connect callback; False if it was not there."""
        return remove(self._callbacks.connect, callback)

    def add_disconnect_callback(self, callback: OnDisconnectCallback) -> None:
        """Run ``callback(channel)`` once, when this connection ends."""
        self._callbacks.disconnect.append(callback)

    def remove_disconnect_callback(self, callback: OnDisconnectCallback) -> bool:
        """Forget a disconnect callback; False if it was not there."""
        return remove(self._callbacks.disconnect, callback)

    def add_error_callback(self, callback: OnErrorCallback) -> None:
        """Run ``callback(channel, exc)`` when a method fails with an internal error."""
        self._callbacks.error.append(callback)

    def remove_error_callback(self, callback: OnErrorCallback) -> bool:
        """Forget an error callback; False if it was not there."""
        return remove(self._callbacks.error, callback)

    async def on_connect(self) -> None:
        """Start the connect callbacks, each in its own task.

        Not awaited before the read loop starts: a callback that calls the
        other side needs the read loop running to get its answer.
        """
        self._callbacks.start_connect()

    async def wait_connect_callbacks(self) -> None:
        """Wait until the connect callbacks started by :meth:`on_connect` have finished.

        The client's ``await_connect_callbacks=True`` (fastapi-ws-rpc 1.2's
        behaviour) uses it so that ``async with`` enters only after them.
        """
        await self._callbacks.wait_connect()

    async def on_disconnect(self) -> None:
        """Mark the channel closed (failing pending calls) and await the disconnect callbacks."""
        self._mark_closed("disconnected")
        await self._callbacks.fire_disconnect()

    async def on_error(self, error: Exception) -> None:
        """Run the error callbacks for ``error`` (a failing one is logged, never raised)."""
        await self._callbacks.fire_error(error)

    def call(
        self, name: str, args: Params = None, timeout: Any = _DEFAULT, *, call_id: Any = None
    ) -> Awaitable[Response]:
        """Call ``name`` on the other side and wait for its answer.

        ``args`` is a dict (named params) or a list (positional). The awaitable
        gives the :class:`~fastwsrpc.protocol.Response`; a remote error raises
        the matching :class:`~fastwsrpc.errors.RemoteValueError` subclass.
        ``timeout`` defaults to ``default_response_timeout`` (``None``: wait
        as long as the connection lives). Past the peer's limit of calls in
        flight the call waits here first (``max_queued_calls``).
        """
        return self._calls.call(name, args, timeout, call_id=call_id)

    async def notify(self, name: str, args: Params = None) -> None:
        """Send a notification: returns once the frame is handed to the socket; never answered."""
        await self._calls.notify(name, args)

    def call_batch(self, calls: Iterable[BatchCall], timeout: Any = _DEFAULT) -> Awaitable[List[Response]]:
        """Several calls in one frame; their responses in order, errors not raised (see ``OutgoingCalls``)."""
        return self._calls.call_batch(calls, timeout)

    async def send_raw(self, message: Mapping[str, Any]) -> None:
        """Send a JSON-RPC message built by hand (a dict), as ``fastapi-ws-rpc``'s ``send_raw``."""
        await self._calls.send_raw(message)

    async def ping(self) -> Response:
        """Call the other side's ``ping`` method: the whole path is alive if it answers."""
        return await self._calls.call("ping")

    def stream(
        self,
        name: str,
        args: Params = None,
        *,
        buffer: int = DEFAULT_STREAM_BUFFER,
        timeout: Optional[float] = None,
        result_type: Optional[Type[Any]] = None,
    ) -> RpcStream:
        """Consume the stream method ``name`` of the other side (see :class:`~fastwsrpc.streams.RpcStream`)."""
        return RpcStream(self._streams, name, args, buffer, timeout, result_type)

    def subscribe(
        self,
        *topics: str,
        on_slow: Optional[str] = None,
        buffer: int = DEFAULT_STREAM_BUFFER,
        since: Optional[Mapping[str, Any]] = None,
    ) -> RpcStream:
        """Events the other side publishes on ``topics``, as :class:`~fastwsrpc.topics.TopicEvent` items.

        ``since``: ``{topic: {"epoch": e, "offset": n}}``, positions to recover
        from (see docs/guide/recovery.md); ``{}`` asks where each topic starts.
        """
        params: Dict[str, Any] = {"topics": list(topics)}
        if on_slow is not None:
            params["on_slow"] = on_slow
        if since is not None:
            params["since"] = dict(since)
        return RpcStream(self._streams, SUBSCRIBE, params, buffer, None, TopicEvent)
