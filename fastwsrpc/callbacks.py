"""Connect, disconnect and error callbacks of a connection (fastapi-ws-rpc's hooks).

A callback that fails is logged and never takes the connection down with it.
Each callback gets the channel (``owner``); this module knows it only as the
object to pass on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, List, Optional, Sequence

from .logger import get_logger
from .watchdog import spawn_background

logger = get_logger("channel")

OnConnectCallback = Callable[[Any], Awaitable[Any]]
OnDisconnectCallback = Callable[[Any], Awaitable[Any]]
OnErrorCallback = Callable[[Any, Exception], Awaitable[Any]]


class Callbacks:
    """The three callback lists of one connection and how they run.

    Every connection of a server starts with the server's lists, and few ever
    change theirs: each is kept as a tuple (the empty one is shared) until the
    connection asks for its list to change (``connect``, ``disconnect``,
    ``error``), which makes it a list of its own then. Three lists per
    connection were 168 bytes of every idle one.
    """

    __slots__ = (
        "_connect",
        "_connect_tasks",
        "_disconnect",
        "_error",
        "_loop",
        "_owner",
        "_spawn",
    )

    def __init__(
        self,
        owner: Any,
        loop: asyncio.AbstractEventLoop,
        spawn: Callable[..., Optional[asyncio.Task[Any]]],
        connect: Optional[List[OnConnectCallback]] = None,
        disconnect: Optional[List[OnDisconnectCallback]] = None,
        error: Optional[List[OnErrorCallback]] = None,
    ) -> None:
        self._owner = owner
        self._loop = loop
        self._spawn = spawn
        self._connect: Sequence[OnConnectCallback] = tuple(connect or ())
        self._disconnect: Sequence[OnDisconnectCallback] = tuple(disconnect or ())
        self._error: Sequence[OnErrorCallback] = tuple(error or ())
        self._connect_tasks: Sequence[asyncio.Task[Any]] = ()

    @property
    def connect(self) -> List[OnConnectCallback]:
        """This connection's connect callbacks, to change."""
        if not isinstance(self._connect, list):
            self._connect = list(self._connect)
        return self._connect

    @property
    def disconnect(self) -> List[OnDisconnectCallback]:
        """This connection's disconnect callbacks, to change."""
        if not isinstance(self._disconnect, list):
            self._disconnect = list(self._disconnect)
        return self._disconnect

    @property
    def error(self) -> List[OnErrorCallback]:
        """This connection's error callbacks, to change."""
        if not isinstance(self._error, list):
            self._error = list(self._error)
        return self._error

    def start_connect(self) -> None:
        """Run the connect callbacks, each in its own task (they may call the peer: the reader must run)."""
        if self._connect:
            tasks = [self._spawn(self.run(callback, self._owner), units=0) for callback in self._connect]
            self._connect_tasks = [task for task in tasks if task is not None]

    async def wait_connect(self) -> None:
        if self._connect_tasks:
            await asyncio.gather(*self._connect_tasks, return_exceptions=True)

    async def fire_error(self, error: Exception) -> None:
        for callback in self._error:
            await self.run(callback, self._owner, error)

    def internal_error(self, exc: Exception) -> None:
        """A method failed with an internal error: tell the error callbacks, in the background."""
        if self._error:
            spawn_background(self._loop, self.fire_error(exc))

    async def fire_disconnect(self) -> None:
        """Run the disconnect callbacks, once for the connection's life."""
        callbacks, self._disconnect = self._disconnect, ()
        for callback in callbacks:
            await self.run(callback, self._owner)

    async def run(self, callback: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await callback(*args)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("callback %r of channel %s failed", callback, getattr(self._owner, "id", "?"))


def remove(callbacks: List[Any], callback: Any) -> bool:
    """Take ``callback`` out of ``callbacks``; False if it was not there."""
    try:
        callbacks.remove(callback)
    except ValueError:
        return False
    return True
