"""One timer for many connections: a timing wheel for periodic per-connection work (keepalive pings).

A ``TimerHandle`` per connection costs an idle connection about 500 bytes, and
the loop's heap grows with every connection. A wheel keeps each connection in
one of ``n`` buckets (a set entry) and one timer turns it: every ``interval / n``
seconds the next bucket's members are called. So each member is called once per
``interval`` (the first time between ``interval - tick`` and ``interval`` after
it joined), and a loop has one handle per interval in use, not one per
connection. Idle wheels remove themselves, so nothing outlives its loop.
"""

from __future__ import annotations

import asyncio
from typing import Dict, List, Optional, Protocol, Set, Tuple

__all__ = ["Wheel", "wheel_for"]

#: The shortest turn of a wheel (seconds): members are called up to this much early or late.
TICK = 0.5
#: The most buckets a wheel has (the longest intervals are cut into this many turns).
MAX_BUCKETS = 64


class Member(Protocol):
    def on_turn(self) -> None:
        """Called once per interval, in the loop; may leave the wheel (``Wheel.discard``)."""


class Wheel:
    """Calls its members' ``on_turn`` once per ``interval`` seconds, on one timer of ``loop``."""

    __slots__ = ("_buckets", "_handle", "_index", "_key", "interval", "loop", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        count = max(1, min(MAX_BUCKETS, int(interval / TICK)))
        self.tick = interval / count
        self._buckets: List[Set[Member]] = [set() for _ in range(count)]
        self._index = 0
        self._handle: Optional[asyncio.TimerHandle] = None
        self._key = (id(loop), interval)

    def add(self, member: Member) -> Set[Member]:
        """Join: called first about one interval from now. Returns the bucket (for :meth:`discard`)."""
        buckets = self._buckets
        bucket = buckets[(self._index - 1) % len(buckets)]  # the last to come round
        bucket.add(member)
        if self._handle is None:
            self._handle = self.loop.call_later(self.tick, self._turn)
            _wheels[self._key] = self
        return bucket

    def discard(self, member: Member, bucket: Set[Member]) -> None:
        bucket.discard(member)

    def _turn(self) -> None:
        buckets = self._buckets
        self._index = index = (self._index + 1) % len(buckets)
        for member in list(buckets[index]):
            member.on_turn()
        if any(buckets):
            self._handle = self.loop.call_later(self.tick, self._turn)
        else:  # nobody left: the wheel goes, and its loop keeps no reference to it
            self._handle = None
            if _wheels.get(self._key) is self:
                del _wheels[self._key]


#: The wheels in use, by (loop, interval); each removes itself when it empties.
_wheels: Dict[Tuple[int, float], Wheel] = {}


def wheel_for(loop: asyncio.AbstractEventLoop, interval: float) -> Wheel:
    """The wheel of ``loop`` for ``interval``, made on first use."""
    wheel = _wheels.get((id(loop), interval))
    if wheel is None or wheel.loop is not loop:  # none yet, or a dead loop's whose id was reused
        wheel = Wheel(loop, interval)
    return wheel
