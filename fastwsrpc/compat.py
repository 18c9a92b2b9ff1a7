# mypy: disable-error-code="misc"
# (mixins of RpcChannel annotate self as RpcChannel; mypy checks their bodies against it)
"""fastapi-ws-rpc's promise store: ``async_call``, ``get_saved_*``, ``RpcPromise``.

Kept for code written against ``fastapi-ws-rpc`` (``call_me_back`` /
``get_response`` round trips). It is off the hot path: nothing here runs for
an ordinary ``call``, and its sweep timer starts only with the first
``async_call`` of a connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Optional

from .errors import RpcChannelClosedError
from .protocol import Response, encode_request

if TYPE_CHECKING:
    from .channel import RpcChannel
    from .outgoing import Params


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
    """Mixin of :class:`~fastwsrpc.channel.RpcChannel`: answers kept until collected."""

    def async_call(self: RpcChannel, name: str, args: Params = None, call_id: Any = None) -> RpcPromise:
        """Start a call without waiting; the answer is kept until collected.

        Returns an :class:`RpcPromise`; ``get_saved_response(call_id)`` or
        ``await promise.wait()`` gives the response. Entries not collected are
        dropped after ``promise_ttl`` seconds.
        """
        self._check_open()
        loop = self._loop
        future: asyncio.Future[Response] = loop.create_future()
        deadline = loop.time() + self.promise_ttl
        if call_id is None:
            call_id = self._pending.register(future, deadline)
        else:
            self._pending.add(call_id, future, deadline)
        promise = RpcPromise(call_id, future)
        self._saved[str(call_id)] = promise
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self.promise_ttl, self._sweep)
        self._spawn(self._send_or_fail(call_id, encode_request(call_id, name, args)), units=0)
        return promise

    def _sweep(self: RpcChannel) -> None:
        """Every ``promise_ttl`` seconds: drop calls whose deadline passed and nobody collected."""
        self._sweep_handle = None
        for call_id in self._pending.expire(self._loop.time()):
            self._saved.pop(str(call_id), None)
        if not self._closed and (self._saved or len(self._pending)):
            self._sweep_handle = self._loop.call_later(self.promise_ttl, self._sweep)

    async def _send_or_fail(self: RpcChannel, call_id: Any, data: bytes) -> None:
        try:
            await self._send_counted(data)
        except Exception as exc:
            self._pending.fail(call_id, RpcChannelClosedError(f"call not sent: {exc}"))

    def get_saved_promise(self: RpcChannel, call_id: Any) -> Optional[RpcPromise]:
        """The promise of an ``async_call`` by its id, if still kept."""
        return self._saved.get(str(call_id))

    def get_saved_response(self: RpcChannel, call_id: Any) -> Optional[Response]:
        """The answer of an ``async_call`` if it has arrived (``None`` otherwise)."""
        promise = self._saved.get(str(call_id))
        if promise is None or not promise.done() or promise._future.cancelled():
            return None
        return promise._future.result() if promise._future.exception() is None else None

    def clear_saved_call(self: RpcChannel, call_id: Any) -> None:
        """Forget an ``async_call``'s answer (collected, or no longer wanted)."""
        self._saved.pop(str(call_id), None)
