"""The timeouts that need a clock: send (a peer that reads nothing), idle, and receive (slowloris).

One timer per connection, started only when one of them is set. It compares
the channel's progress counters with the previous tick, so the per-message
path pays an integer increment and never reads the clock.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Coroutine, Optional, Set

from .logger import get_logger
from .transport import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION

if TYPE_CHECKING:
    from .channel import RpcChannel

logger = get_logger("channel")


class Watchdog:
    """One timer per connection for the timeouts that need a clock: send, idle, receive.

    It ticks every quarter of the shortest timeout set and compares progress
    counters with the previous tick, so the hot path pays one integer increment
    per frame and never reads the clock.
    """

    __slots__ = (
        "channel",
        "handle",
        "idle_for",
        "last_received",
        "last_sent",
        "receiving_for",
        "stalled_for",
        "tick",
        "tick_event",
    )

    def __init__(self, channel: RpcChannel, tick: float) -> None:
        self.channel = channel
        self.tick = tick
        self.stalled_for = self.idle_for = self.receiving_for = 0.0
        self.last_received = self.last_sent = -1
        #: Set at every tick when a test puts an Event here (to wait for ticks, not for time).
        self.tick_event: Optional[asyncio.Event] = None
        self.handle: Optional[asyncio.TimerHandle] = channel._loop.call_later(tick, self._check)

    @classmethod
    def start(cls, channel: RpcChannel) -> Optional[Watchdog]:
        s = channel.settings
        timeouts = [t for t in (s.send_timeout, s.idle_timeout, s.message_receive_timeout) if t]
        return cls(channel, min(timeouts) / 4) if timeouts else None

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _check(self) -> None:
        if self.tick_event is not None:
            self.tick_event.set()
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
            spawn_background(ch._loop, ch._fire_disconnect())
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
            spawn_background(ch._loop, _close_then_abort(ch, CLOSE_POLICY_VIOLATION, "message receive timeout"))
            return
        # Nothing either way and nothing in flight.
        idle = not (received_any or sent_any or ch._active or busy or len(ch._pending) or ch._consumers)
        self.idle_for = self.idle_for + tick if idle else 0.0
        if s.idle_timeout and self.idle_for >= s.idle_timeout:
            logger.info("channel %s: idle for %.3g s; closing", ch.id, s.idle_timeout)
            spawn_background(ch._loop, _close_then_abort(ch, CLOSE_GOING_AWAY, "idle timeout"))
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


def spawn_background(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
    task = loop.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
