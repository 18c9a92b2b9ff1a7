"""The few operations a channel needs from a socket.

The channel knows nothing of FastAPI or ``websockets``: the server endpoint,
the client and the in-memory pair of :mod:`fastwsrpc.testing` each wrap their
socket in an object with these members. Anything with them (another framework,
a test double) can carry a channel.

Flow control rests on two properties every transport must have: ``receive``
is only called when the channel wants another message (a transport must not
read ahead without bound: Starlette/uvicorn and ``websockets`` pause the TCP
socket after a few queued messages), and ``send`` waits while the peer is not
reading (it returns once the frame is in a bounded buffer).
"""

from __future__ import annotations

from typing import Union

from .errors import RpcError

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
#: The server restarts (a deploy): come back, to another node if you know one.
CLOSE_SERVICE_RESTART = 1012


class TransportClosed(RpcError):
    """The socket is closed; ``code`` and ``reason`` are the WebSocket close frame's, if known."""

    code: int

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"connection closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class Transport(Protocol):
    """What a channel reads from and writes to."""

    async def send(self, data: bytes) -> None:
        """Send one text frame holding ``data`` (UTF-8 JSON); raise TransportClosed if closed.

        Waits while the peer is not reading, so that a slow reader slows its senders.
        """

    async def receive(self) -> Union[str, bytes]:
        """The next whole message; raise TransportClosed when the connection ends."""

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the connection with a closing handshake; never raises if it is already closed."""

    def abort(self) -> None:
        """Drop the connection at once, without a handshake: for a peer that reads nothing."""

    @property
    def peer(self) -> str:
        """The peer's address (``host:port``) for log lines; ``""`` when unknown."""

    def receiving(self) -> bool:
        """Whether part of a message has arrived and the rest has not (slowloris watch).

        ``False`` when the transport cannot tell: the receive timeout then relies
        on keepalive instead.
        """
