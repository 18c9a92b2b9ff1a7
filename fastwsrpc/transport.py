"""The few operations a channel needs from a socket.

The channel knows nothing of FastAPI or ``websockets``; the server endpoint and
the client each wrap their socket in an object with these three coroutines.
Anything with them (a test double, another framework) can carry a channel.
"""

from __future__ import annotations

from typing import Union

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Protocol  # type: ignore[assignment]

#: WebSocket close codes we use (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011


class TransportClosed(Exception):
    """The socket is closed; ``code`` and ``reason`` are the WebSocket close frame's, if known."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"connection closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class Transport(Protocol):
    async def send(self, data: bytes) -> None:
        """Send one text frame holding ``data`` (UTF-8 JSON); raise TransportClosed if closed."""

    async def receive(self) -> Union[str, bytes]:
        """The next whole message; raise TransportClosed when the connection ends."""

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection; never raises if it is already closed."""
