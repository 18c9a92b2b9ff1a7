# mypy: disable-error-code="misc"
# (mixins of RpcChannel annotate self as RpcChannel; mypy checks their bodies against it)
"""Connect, disconnect and error callbacks of a channel (fastapi-ws-rpc's hooks).

Mixin of :class:`~fastwsrpc.channel.RpcChannel`. A callback that fails is
logged and never takes the connection down with it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List

from .logger import get_logger
from .watchdog import spawn_background

if TYPE_CHECKING:
    from .channel import RpcChannel

logger = get_logger("channel")

OnConnectCallback = Callable[["RpcChannel"], Awaitable[Any]]
OnDisconnectCallback = Callable[["RpcChannel"], Awaitable[Any]]
OnErrorCallback = Callable[["RpcChannel", Exception], Awaitable[Any]]


class Callbacks:
    """Mixin: the three callback lists and how they run."""

    def add_connect_callback(self: RpcChannel, callback: OnConnectCallback) -> None:
        """Run ``callback(channel)`` when this channel's connection opens."""
        self._connect_callbacks.append(callback)

    def remove_connect_callback(self: RpcChannel, callback: OnConnectCallback) -> bool:
        """Forget a connect callback; False if it was not there."""
        return _remove(self._connect_callbacks, callback)

    def add_disconnect_callback(self: RpcChannel, callback: OnDisconnectCallback) -> None:
        """Run ``callback(channel)`` once, when this connection ends."""
        self._disconnect_callbacks.append(callback)

    def remove_disconnect_callback(self: RpcChannel, callback: OnDisconnectCallback) -> bool:
        """Forget a disconnect callback; False if it was not there."""
        return _remove(self._disconnect_callbacks, callback)

    def add_error_callback(self: RpcChannel, callback: OnErrorCallback) -> None:
        """Run ``callback(channel, exc)`` when a method fails with an internal error."""
        self._error_callbacks.append(callback)

    def remove_error_callback(self: RpcChannel, callback: OnErrorCallback) -> bool:
        """Forget an error callback; False if it was not there."""
        return _remove(self._error_callbacks, callback)

    async def on_connect(self: RpcChannel) -> None:
        """Run the connect callbacks, each in its own task.

        Not awaited before the read loop starts: a callback that calls the other
        side needs the read loop running to get its answer.
        """
        tasks = [self._spawn(self._run_callback(callback, self), units=0) for callback in self._connect_callbacks]
        self._connect_tasks = [task for task in tasks if task is not None]

    async def wait_connect_callbacks(self: RpcChannel) -> None:
        """Wait until the connect callbacks started by :meth:`on_connect` have finished.

        The client's ``await_connect_callbacks=True`` (fastapi-ws-rpc 1.2's
        behaviour) uses it so that ``async with`` enters only after them.
        """
        if self._connect_tasks:
            await asyncio.gather(*self._connect_tasks, return_exceptions=True)

    async def on_disconnect(self: RpcChannel) -> None:
        """Mark the channel closed (failing pending calls) and await the disconnect callbacks."""
        self._mark_closed("disconnected")
        await self._fire_disconnect()

    async def on_error(self: RpcChannel, error: Exception) -> None:
        """Run the error callbacks for ``error`` (a failing one is logged, never raised)."""
        for callback in self._error_callbacks:
            await self._run_callback(callback, self, error)

    async def _run_callback(self: RpcChannel, callback: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await callback(*args)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("callback %r of channel %s failed", callback, self.id)

    def _internal_error(self: RpcChannel, exc: Exception) -> None:
        if self._error_callbacks:
            spawn_background(self._loop, self.on_error(exc))

    async def _fire_disconnect(self: RpcChannel) -> None:
        callbacks = self._disconnect_callbacks
        none: List[OnDisconnectCallback] = []
        self._disconnect_callbacks = none
        for callback in callbacks:
            await self._run_callback(callback, self)


def _remove(callbacks: List[Any], callback: Any) -> bool:
    try:
        callbacks.remove(callback)
    except ValueError:
        return False
    return True
