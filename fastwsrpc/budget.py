"""The budget of one connection: counters and bounds of what its peer makes us hold.

The rule is HTTP/2's: bound the work, never stop hearing the peer. Every
message the reader starts holds one unit of ``active`` and its frame's bytes of
``held`` until its handler ends; past ``max_pending_requests`` it waits in
``deferred``, a queue bounded by messages and (through ``held``) by bytes; past
that, a call is refused at once. Every answer holds one of ``sending`` and its
bytes until the socket takes it. The reader stops (``must_pause``) only when
the peer does not read our answers, or when notifications overflowed the
queue: never because handlers are busy.

Plain counters and one future: no tasks, no I/O. The handler runner
(:mod:`~fastwsrpc.runner`) moves them; the channel's reader asks
``must_pause`` and waits in ``wait_for_room``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Deque, Optional, Tuple, cast

from .config import RpcSettings

#: Seconds a refused caller is told to wait before it tries again (``data.retry_after`` of -32001).
RETRY_AFTER = 0.1

#: The queue of every budget that has queued nothing yet: an empty tuple, shared. A
#: deque is about 600 bytes, a quarter of the growth of an idle connection since
#: 2f44ab7, and most connections never queue. Reads (``len``, truth, iteration)
#: work on it as on an empty deque; ``queue`` makes the deque, ``forget`` drops it.
NO_QUEUE = cast(Deque[Tuple[Any, int]], ())


class Budget:
    """The counters of one connection; see the module docstring for the rules."""

    __slots__ = (
        "active",
        "deferred",
        "dropped_notifications",
        "held",
        "max_active",
        "max_bytes",
        "max_queued",
        "max_sending",
        "nested",
        "overflowed_notifications",
        "refused_calls",
        "room",
        "sending",
    )

    def __init__(self, settings: RpcSettings) -> None:
        self.max_active = settings.max_pending_requests
        self.max_queued = settings.max_queued_requests
        self.max_bytes = settings.max_connection_bytes
        self.max_sending = settings.max_send_queue_size
        #: Incoming work running: calls, notifications, batch items.
        self.active = 0
        #: Bytes held for the peer: frames running or queued, answers unsent, parked meta.
        self.held = 0
        #: Answers handed to the socket and not yet taken by it.
        self.sending = 0
        #: Our own calls that our running handlers wait for (see ``overflow``).
        self.nested = 0
        #: ``(message, bytes)`` waiting past ``max_active``.
        self.deferred: Deque[Tuple[Any, int]] = NO_QUEUE
        #: The future a paused reader waits on.
        self.room: Optional[asyncio.Future[None]] = None
        #: Calls refused with -32001: past the queue or the byte budget.
        self.refused_calls = 0
        #: Notifications queued past the queue's bound (the reader stopped until it drained).
        self.overflowed_notifications = 0
        #: Notifications dropped past a full queue while our handlers waited for this peer's answers.
        self.dropped_notifications = 0

    def queue(self, msg: Any, size: int) -> None:
        """Put ``(msg, size)`` at the end of the queue (made here, on first use; see ``NO_QUEUE``)."""
        deferred = self.deferred
        if deferred is NO_QUEUE:
            deferred = self.deferred = deque()
        deferred.append((msg, size))

    def forget(self) -> None:
        """Drop what is queued (the connection ended)."""
        self.deferred = NO_QUEUE

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit (a message is always admitted to an empty budget)."""
        held = self.held
        return not held or held + size <= self.max_bytes

    def must_pause(self) -> bool:
        """Whether the reader must stop: the peer does not read our answers, or notifications overflowed."""
        if self.sending < self.max_sending and self.held <= self.max_bytes:
            return len(self.deferred) > self.max_queued
        return True

    async def wait_for_room(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the send side drains or the queue is back under its bound (see ``wake``)."""
        self.room = loop.create_future()
        try:
            await self.room
        finally:
            self.room = None

    def wake(self) -> None:
        """Something that paused the reader may have changed: let it look again."""
        room = self.room
        if room is not None and not room.done():
            room.set_result(None)
