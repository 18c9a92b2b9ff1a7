"""The native transport's keepalive: one ping exchange per turn between two sides that both ping.

Driven by hand (``on_turn`` is what the loop's wheel calls every ``ping_interval``)
on a protocol object over a transport that records what is written: no clock.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Tuple

from fastwsrpc.native import NativeWebSocket

_PING, _PONG = 0x89, 0x8A


class ClientSide(NativeWebSocket):
    """The client's framing (masked frames out, unmasked in) without its opening handshake."""

    __slots__ = ()
    is_client = True


class Recorder:
    """The asyncio transport's part the protocol uses; keeps every write."""

    def __init__(self) -> None:
        self.written: List[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def set_write_buffer_limits(self, high: int = 0, low: int = 0) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def opcodes(self) -> List[int]:
        return [frame[0] for frame in self.written]


def opened(speedups: Any, first_turn: bool = True) -> Tuple[NativeWebSocket, Recorder]:
    """A server side, open; ``first_turn``: its first turn, which it leaves to the client, already past."""
    ws = NativeWebSocket(1 << 20, ping_interval=600, ping_timeout=600, speedups=speedups)
    transport = Recorder()
    ws.connection_made(transport)  # type: ignore[arg-type]
    ws._open(b"")
    if first_turn:
        ws.on_turn()
        assert transport.written == []
    return ws, transport


def ping_from_peer(speedups: Any, payload: bytes = b"pp") -> bytes:
    frame: bytes = speedups.build_frame(0x9, payload, True)  # a client's frames are masked
    return frame


def pong_from_peer(speedups: Any, payload: bytes) -> bytes:
    frame: bytes = speedups.build_frame(0xA, payload, True)
    return frame


async def test_a_side_that_was_pinged_since_its_last_turn_sends_no_ping(speedups: Any) -> None:
    ws, transport = opened(speedups)
    try:
        ws.data_received(ping_from_peer(speedups))
        assert transport.opcodes() == [_PONG]  # answered at once, whatever the turn
        ws.on_turn()
        assert transport.opcodes() == [_PONG], "the peer's ping and our pong were this turn's exchange"
        ws.on_turn()  # a turn without the peer's ping: ours goes out
        assert transport.opcodes() == [_PONG, _PING]
    finally:
        ws.connection_lost(None)


async def test_a_peer_that_stops_pinging_is_still_found_dead(speedups: Any) -> None:
    """Its last ping spares it one turn; then it is pinged, and a missing pong drops it (1011)."""
    ws, transport = opened(speedups)
    try:
        ws.data_received(ping_from_peer(speedups))
        ws.on_turn()
        ws.on_turn()
        assert transport.opcodes() == [_PONG, _PING]
        deadline = ws._ping_deadline
        assert deadline is not None
        deadline.cancel()
        ws._ping_expired()  # what the timer does when ping_timeout passes without a pong
        close = transport.written[-1]
        assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1011 and transport.closed
    finally:
        ws.connection_lost(None)


async def test_our_ping_answered_keeps_the_connection_and_the_next_turn_pings_again(speedups: Any) -> None:
    ws, transport = opened(speedups)
    try:
        ws.on_turn()
        assert transport.opcodes() == [_PING]
        payload = transport.written[0][2:]
        ws.data_received(pong_from_peer(speedups, payload))
        assert ws._ping_deadline is None and not transport.closed
        ws.on_turn()
        assert transport.opcodes() == [_PING, _PING]
    finally:
        ws.connection_lost(None)


async def test_a_server_leaves_its_first_turn_to_the_client(speedups: Any) -> None:
    """A peer that never pings (a browser) is pinged from the server's second turn on."""
    ws, transport = opened(speedups, first_turn=False)
    try:
        ws.on_turn()
        assert transport.written == []
        ws.on_turn()
        assert transport.opcodes() == [_PING]
    finally:
        ws.connection_lost(None)


async def test_both_sides_pinging_make_one_exchange_a_turn(speedups: Any) -> None:
    """Two protocol objects wired to each other: over ten turns each, ten pings in all, not twenty,
    and the client's: the server, which holds the many connections, only answers."""
    server, to_client = opened(speedups, first_turn=False)
    client = ClientSide(1 << 20, ping_interval=600, ping_timeout=600, speedups=speedups)
    to_server = Recorder()
    client.connection_made(to_server)  # type: ignore[arg-type]
    client._open(b"")

    def deliver() -> None:
        while to_client.written or to_server.written:
            frames, to_client.written = to_client.written, []
            for frame in frames:
                client.data_received(frame)
            frames, to_server.written = to_server.written, []
            for frame in frames:
                server.data_received(frame)

    pings: List[str] = []
    real_server_build, real_client_build = server._build, client._build

    def counting(build: Any, side: str) -> Any:
        def counted(opcode: int, *args: Any) -> bytes:
            if opcode == 0x9:
                pings.append(side)
            return build(opcode, *args)  # type: ignore[no-any-return]

        return counted

    server._build, client._build = counting(real_server_build, "server"), counting(real_client_build, "client")
    try:
        for _ in range(10):
            server.on_turn()
            deliver()
            client.on_turn()
            deliver()
            await asyncio.sleep(0)
        assert pings == ["client"] * 10
        assert server._ping_deadline is None and client._ping_deadline is None  # every ping answered
    finally:
        server.connection_lost(None)
        client.connection_lost(None)
