"""fastapi-ws-rpc's promise store: ``async_call``, ``get_saved_*``, ``RpcPromise``.

Kept for code written against ``fastapi-ws-rpc`` (``call_me_back`` /
``get_response`` round trips). It is off the hot path: the channel creates the
store with the first ``async_call`` of a connection, and its sweep timer runs
only while calls are kept.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, Optional

from .errors import RpcChannelClosedError
from .protocol import Response, encode_request

if TYPE_CHECKING:
    from .outgoing import OutgoingCalls, Params
    from .runner import HandlerRunner
    from .state import ConnectionState


class RpcPromise:
    """An outgoing call started with :meth:`RpcChannel.async_call`; await :meth:`wait`."""

    __slots__ = ("_future", "call_id")

    def __init__(self, call_id: Any, future: asyncio.Future[Response]) -> None:
        self.call_id = call_id
        self._future = future

    async def wait(self) -> Response:
        """The answer, when it comes (raises if the channel closes first)."""
        return await self._future

    def done(self) -> bool:
        """Whether the answer (or a failure) is in."""
        return self._future.done()


class PromiseStore:
    """Answers of ``async_call`` kept until collected, or until ``ttl`` seconds passed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        state: ConnectionState,
        calls: OutgoingCalls,
        runner: HandlerRunner,
        ttl: float,
    ) -> None:
        self._loop = loop
        self._state = state
        self._calls = calls
        self._runner = runner
        self.ttl = ttl
        self._saved: Dict[str, RpcPromise] = {}
        self._sweep_handle: Optional[asyncio.TimerHandle] = None

    def async_call(self, name: str, args: Params = None, call_id: Any = None) -> RpcPromise:
        """Start a call without waiting; see :meth:`RpcChannel.async_call`."""
        self._calls.check_open()
        loop = self._loop
        pending = self._calls.pending
        future: asyncio.Future[Response] = loop.create_future()
        deadline = loop.time() + self.ttl
        if call_id is None:
            call_id = pending.register(future, deadline)
        else:
            pending.add(call_id, future, deadline)
        promise = RpcPromise(call_id, future)
        self._saved[str(call_id)] = promise
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self.ttl, self._sweep)
        self._runner.spawn(self._send_or_fail(call_id, encode_request(call_id, name, args)), units=0)
        return promise

    def _sweep(self) -> None:
        """Every ``ttl`` seconds: drop calls whose deadline passed and nobody collected."""
        self._sweep_handle = None
        pending = self._calls.pending
        for call_id in pending.expire(self._loop.time()):
            self._saved.pop(str(call_id), None)
        if not self._state.closed and (self._saved or len(pending)):
            self._sweep_handle = self._loop.call_later(self.ttl, self._sweep)

    async def _send_or_fail(self, call_id: Any, data: bytes) -> None:
        try:
            await self._runner.send_counted(data)
        except Exception as exc:
            self._calls.pending.fail(call_id, RpcChannelClosedError(f"call not sent: {exc}"))

    def get_saved_promise(self, call_id: Any) -> Optional[RpcPromise]:
        return self._saved.get(str(call_id))

    def get_saved_response(self, call_id: Any) -> Optional[Response]:
        promise = self._saved.get(str(call_id))
        if promise is None or not promise.done() or promise._future.cancelled():
            return None
        return promise._future.result() if promise._future.exception() is None else None

    def clear_saved_call(self, call_id: Any) -> None:
        self._saved.pop(str(call_id), None)

    def close(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        self._saved.clear()
