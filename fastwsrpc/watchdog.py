"""The timeouts that need a clock: send (a peer that reads nothing), idle, and receive (slowloris).

Started only when one of them is set, on the loop's timing wheel for its tick
(:mod:`fastwsrpc.wheel`: one timer for every connection, not a ``TimerHandle``
each). It compares the channel's progress counters with the previous tick, so
the per-message path pays an integer increment and never reads the clock. A
tick with nothing received also lets go of the task a busy connection keeps
waiting for its next message (``HandlerRunner.let_go``): a quiet connection
keeps no task.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Coroutine, Optional, Protocol, Set

from .config import RpcSettings
from .logger import get_logger
from .transport import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION
from .wheel import wheel_for

logger = get_logger("channel")


class Owner(Protocol):
    """What the watchdog acts through: the channel, as far as this module needs it."""

    @property
    def id(self) -> str: ...

    def _in_flight(self) -> bool:
        """Whether our calls or streams wait for the peer (then the connection is not idle)."""

    def _let_go(self) -> None:
        """Nothing came for a whole tick: let go of what a busy connection keeps at hand."""

    def abort(self, reason: str) -> None: ...

    async def close(self, code: int = ..., reason: str = ...) -> None: ...

    async def on_disconnect(self) -> None: ...


async def _abort_then_fire(owner: Owner, reason: str) -> None:
    """The peer is stalled: drop the connection, then run the disconnect callbacks."""
    owner.abort(reason)
    await owner.on_disconnect()


async def _close_then_abort(owner: Owner, code: int, reason: str) -> None:
    """Close with a handshake within 1 s, else drop the connection."""
    try:
        await asyncio.wait_for(owner.close(code, reason), 1.0)
    except (asyncio.TimeoutError, Exception):
        owner.abort(reason)


class Watchdog:
    """The timeouts that need a clock, for one connection: send, idle, receive.

    It ticks every quarter of the shortest timeout set and compares the
    progress record (:class:`~fastwsrpc.state.ConnectionState`) and the budget
    with the previous tick, so the hot path pays one integer increment per
    frame and never reads the clock. It acts through its owner (the channel,
    as :class:`Owner`; held as the owner, not as three bound methods and a
    label: 250 bytes of every idle connection).
    """

    __slots__ = (
        "_budget",
        "_loop",
        "_owner",
        "_settings",
        "_socket",
        "_state",
        "bucket",
        "idle_for",
        "last_received",
        "last_sent",
        "receiving_for",
        "stalled_for",
        "tick",
        "tick_event",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: RpcSettings,
        tick: float,
        state: Any,
        budget: Any,
        socket: Any,
        owner: Owner,
    ) -> None:
        self._loop = loop
        self._settings = settings
        self.tick = tick
        self._state = state
        self._budget = budget
        self._socket = socket
        self._owner = owner
        self.stalled_for = self.idle_for = self.receiving_for = 0.0
        self.last_received = self.last_sent = -1
        #: Set at every tick when a test puts an Event here (to wait for ticks, not for time).
        self.tick_event: Optional[asyncio.Event] = None
        # Turned once per tick by the loop's wheel. Its first turn may come up to one tick
        # early: harmless, as the first turn only takes the counters as they are (-1 above).
        self.bucket: Optional[Set[Any]] = wheel_for(loop, tick).add(self)

    @staticmethod
    def tick_for(settings: RpcSettings) -> Optional[float]:
        """A quarter of the shortest timeout set; None if none is."""
        timeouts = [t for t in (settings.send_timeout, settings.idle_timeout, settings.message_receive_timeout) if t]
        return min(timeouts) / 4 if timeouts else None

    def stop(self) -> None:
        bucket, self.bucket = self.bucket, None
        if bucket is not None:
            bucket.discard(self)

    def on_turn(self) -> None:
        """Every tick (the wheel's turn): compare progress with the last tick, act on a timeout."""
        if self.bucket is None:
            return
        if self.tick_event is not None:
            self.tick_event.set()
        state = self._state
        budget = self._budget
        s = self._settings
        tick = self.tick
        received_any = state.received != self.last_received
        sent_any = state.sent != self.last_sent
        self.last_received, self.last_sent = state.received, state.sent
        owner = self._owner
        # A peer that takes none of what we send.
        busy = budget.sending or state.outgoing
        self.stalled_for = self.stalled_for + tick if (busy and not sent_any) else 0.0
        if s.send_timeout and self.stalled_for >= s.send_timeout:
            peer = self._socket.peer or "?"  # read for the log line only: a syscall on some transports
            logger.warning("channel %s: peer %s read nothing for %.3g s; disconnecting", owner.id, peer, s.send_timeout)
            self.stop()
            reason = f"send timeout: the peer read nothing for {s.send_timeout} s"
            spawn_background(self._loop, _abort_then_fire(owner, reason))
            return
        # A message started and not finished (slowloris); not while we chose not to read.
        if budget.room is None and not received_any and self._socket.receiving():
            self.receiving_for += tick
        else:
            self.receiving_for = 0.0
        if s.message_receive_timeout and self.receiving_for >= s.message_receive_timeout:
            logger.warning(
                "channel %s: peer %s took over %.3g s to send one message; closing",
                owner.id,
                self._socket.peer or "?",
                s.message_receive_timeout,
            )
            self.stop()
            spawn_background(self._loop, _close_then_abort(owner, CLOSE_POLICY_VIOLATION, "message receive timeout"))
            return
        # Nothing either way and nothing in flight.
        idle = not (received_any or sent_any or budget.active or busy or owner._in_flight())
        self.idle_for = self.idle_for + tick if idle else 0.0
        if s.idle_timeout and self.idle_for >= s.idle_timeout:
            logger.info("channel %s: idle for %.3g s; closing", owner.id, s.idle_timeout)
            self.stop()
            spawn_background(self._loop, _close_then_abort(owner, CLOSE_GOING_AWAY, "idle timeout"))
            return
        if state.closed:
            self.stop()
        elif not received_any:
            owner._let_go()


#: Tasks that must outlive the channel's own cancellation (closing, error
#: callbacks); kept referenced so the loop does not garbage-collect them mid-run.
_background: Set[asyncio.Task[Any]] = set()


async def quietly(awaitable: Awaitable[Any]) -> None:
    """Await ``awaitable``, ignoring its failure (closing a socket that is already gone: nothing left to tell)."""
    try:
        await awaitable
    except Exception:
        pass


def spawn_background(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
    task = loop.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
