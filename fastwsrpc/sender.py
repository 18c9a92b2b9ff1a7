"""Write coalescing for a WebSocket connection, shared by the native transport and the client's.

A channel sends one frame per answer, call or notification. Writing each to the
socket costs a syscall per frame; holding them all to the end of the event-loop
turn makes the two processes take turns (the peer waits for our whole batch
while we wait for its answers). So:

* the first frame of a turn is written at once: the peer starts on it while we
  produce the rest;
* the next ones wait in a queue, written together at the end of the turn, or
  sooner once :data:`MAX_FRAMES` wait (in pieces, the peer starts on the first
  while we produce the rest; one write of a whole 64-call window made the two
  sides take turns again) or once a frame of :data:`BIG_FRAME` bytes or more
  arrives (the queue stays small; a large frame gains nothing from company);
* a control frame (ping, pong, close) goes after the data frames already queued:
  their order on the wire is the order the peer sees.

Flow control is TCP's: above :data:`WRITE_HIGH_WATER` bytes in the socket's write
buffer, the asyncio transport calls ``pause_writing`` and senders wait in
:meth:`CoalescingSender.drain` until ``resume_writing``, so a peer that does not
read slows down the code that writes to it. The figures behind these rules are
in docs/guide/benchmarks.md.
"""

from __future__ import annotations

import asyncio
from typing import Callable, List, Optional, cast

__all__ = ["BIG_FRAME", "MAX_FRAMES", "WRITE_HIGH_WATER", "CoalescingSender"]

#: Frames queued before they are written without waiting for the end of the turn.
#: Small on purpose: see the module docstring (a flood of notifications pays a
#: few more syscalls for it).
MAX_FRAMES = 32
#: A frame this large is written at once, with whatever waits before it.
BIG_FRAME = 64 * 1024
#: Bytes in the socket's write buffer above which senders wait for the peer to read.
WRITE_HIGH_WATER = 1024 * 1024
#: The queue of a sender with nothing queued: an empty tuple, shared (reads only; ``send`` makes a list).
_NO_FRAMES = cast(List[bytes], ())


class CoalescingSender:
    """Coalesces the frames of one connection into few writes; holds senders while the peer does not read.

    ``write`` takes one frame's bytes; ``write_batch``, if given, takes the list
    of frames queued in a turn (a transport whose frames still need framing,
    like ``websockets``' sans-I/O protocol, frames them there); without it the
    batch is joined into one ``write``. The owner calls :meth:`pause_writing`,
    :meth:`resume_writing` and :meth:`connection_lost` from its asyncio
    protocol's callbacks of the same names, and checks that the connection is
    open before :meth:`send`: this class knows nothing of WebSocket states.
    """

    __slots__ = (
        "_big",
        "_loop",
        "_lost",
        "_max_frames",
        "_queue",
        "_scheduled",
        "_waiters",
        "_write",
        "_write_batch",
        "paused",
    )

    def __init__(
        self,
        write: Callable[[bytes], None],
        loop: asyncio.AbstractEventLoop,
        *,
        write_batch: Optional[Callable[[List[bytes]], None]] = None,
        max_frames: int = MAX_FRAMES,
        big_frame: int = BIG_FRAME,
    ) -> None:
        self._write = write
        self._write_batch = write_batch
        self._loop = loop
        self._max_frames = max_frames
        self._big = big_frame
        #: Frames waiting for the turn's write: a list from the turn's second frame on (none while idle).
        self._queue: List[bytes] = _NO_FRAMES
        self._scheduled = False
        #: Senders waiting for ``resume_writing``; made by the first (most connections never have one).
        self._waiters: Optional[List[asyncio.Future[None]]] = None
        self._lost: Optional[BaseException] = None
        #: Whether the socket's write buffer is over its high-water mark: callers then await :meth:`drain`.
        self.paused = False

    def send(self, frame: bytes) -> None:
        """Write ``frame`` now if it is the turn's first, else queue it for the turn's write."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)
            self._write(frame)
        else:
            queue = self._queue
            if queue is _NO_FRAMES:
                queue = self._queue = [frame]
            else:
                queue.append(frame)
            if len(queue) >= self._max_frames or len(frame) >= self._big:
                self._flush_queue()

    def send_alone(self, frame: bytes) -> None:
        """Write ``frame`` now without starting a turn, unless one is under way (then as :meth:`send`).

        For a frame that is most likely the only one this connection writes in
        this turn (a topic's publication fanned out to thousands of connections):
        a turn costs a loop callback per connection, and there is nothing to
        coalesce. Outside a turn nothing is queued, so the order is kept.
        """
        if self._scheduled:
            self.send(frame)
        elif self._lost is None:
            self._write(frame)

    def send_control(self, frame: bytes) -> None:
        """Write a control frame now, behind the data frames already queued."""
        if self._queue:
            self.flush()
        if self._lost is None:
            self._write(frame)

    def flush(self) -> None:
        """Write what is queued; the next frame starts a new turn (called at the end of each turn)."""
        self._scheduled = False
        self._flush_queue()

    def _flush_queue(self) -> None:
        queue = self._queue
        if queue:
            self._queue = _NO_FRAMES
            if self._lost is not None:
                return  # after the loss nobody reads them: drop them
            if self._write_batch is not None:
                self._write_batch(queue)
            else:
                self._write(queue[0] if len(queue) == 1 else b"".join(queue))

    # ------------------------------------------------------------ flow control
    async def drain(self) -> None:
        """Wait for ``resume_writing`` (the peer reads again); raises the close error once the connection is lost."""
        if self._lost is not None:
            raise self._lost
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, error: BaseException) -> None:
        """Nothing more is written; waiting senders fail with ``error`` (what the connection ended with)."""
        self._lost = error
        self._queue = _NO_FRAMES
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: a sender that gave up must not log it
