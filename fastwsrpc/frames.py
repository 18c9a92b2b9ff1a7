"""What the WebSocket frame codec of both twins shares: its one exception and the close codes it uses.

The codec itself lives in ``_speedups.pyx`` / ``_speedups_py.py`` (``FrameParser``,
``build_frame``, ``parse_close``, ``apply_mask``); this module holds the few names
both twins must share *by identity* (an exception caught around either twin must
be the same class), so it imports nothing of theirs.
"""

from __future__ import annotations

__all__ = ["CLOSE_INVALID_DATA", "CLOSE_MESSAGE_TOO_BIG", "CLOSE_PROTOCOL_ERROR", "FrameError"]

#: RFC 6455 section 7.4.1: the codes a frame error closes the connection with.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009


class FrameError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with (1002, 1007 or 1009).

    The codec never raises it out of ``FrameParser.feed``: the parser keeps it
    in ``parser.error`` so that the messages parsed before the fault, in the same
    chunk of bytes, are still delivered in order.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"FrameError({self.code}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        # Equal errors compare equal, so the twins' differential tests compare them directly.
        return isinstance(other, FrameError) and (other.code, other.reason) == (self.code, self.reason)

    def __hash__(self) -> int:
        return hash((self.code, self.reason))
