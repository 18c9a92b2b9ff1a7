"""What every part of one connection reads about it: its phase and its progress counters.

A small record instead of the channel's fields: the handler runner, the
outgoing calls, the streams and the watchdog each hold this one object, and
none of them holds (or imports) the channel.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """Where a connection is in its life (the channel's view; the socket has its own)."""

    OPEN = "open"
    CLOSED = "closed"


class ConnectionState:
    """The phase and the progress counters of one connection.

    ``closed`` mirrors ``phase is Phase.CLOSED`` as a plain attribute: it is
    read on every message, and an attribute costs less than a comparison.
    The counters are what the watchdog compares tick to tick, so the hot path
    pays an integer increment and never reads the clock.
    """

    __slots__ = ("closed", "outgoing", "phase", "reason", "received", "sent")

    def __init__(self) -> None:
        self.phase = Phase.OPEN
        self.closed = False
        #: Why it closed (``""`` while open).
        self.reason = ""
        #: Frames read.
        self.received = 0
        #: Frames the socket took.
        self.sent = 0
        #: Our own frames handed to the socket and not yet taken.
        self.outgoing = 0

    def close(self, reason: str) -> bool:
        """Enter ``CLOSED`` once; False if it already was."""
        if self.closed:
            return False
        self.phase = Phase.CLOSED
        self.closed = True
        self.reason = reason
        return True
