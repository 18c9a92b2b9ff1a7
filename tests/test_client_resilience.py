"""The client survives what a server sends it, and reconnects as its settings say (issue 10).

Real sockets on loopback: a FastAPI server in a thread (tests/support.py), or
a bare ``websockets`` server that plays a hostile peer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, List

import pytest
from fastapi import FastAPI
from websockets.asyncio.server import ServerConnection, serve

from fastwsrpc import (
    RpcChannelClosedError,
    RpcConnectionError,
    RpcMethodsBase,
    RpcTimeoutError,
    WebSocketRpcClient,
    WebSocketRpcEndpoint,
)

from .support import ServerThread

pytestmark = pytest.mark.e2e

DEEP = 970  # the depth that used to kill the client's read loop (RecursionError)


class Quitter(RpcMethodsBase):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def flood(self, n: int) -> int:
        """Notify the caller ``n`` times, as fast as its reading lets us."""
        assert self.channel is not None
        for i in range(n):
            await self.channel.notify("note", {"i": i})
        return n

    async def quit_with(self, code: int) -> None:
        """Close this connection with ``code``, as a server that wants the client gone."""
        assert self.channel is not None
        await self.channel.close(code, "go away")


def quitter_app() -> FastAPI:
    app = FastAPI()
    WebSocketRpcEndpoint(Quitter()).register_route(app, "/ws")
    WebSocketRpcEndpoint(Quitter(), send_timeout=0.3).register_route(app, "/impatient")
    WebSocketRpcEndpoint(Quitter(), message_receive_timeout=0.3).register_route(app, "/strict")
    return app


class Listener(RpcMethodsBase):
    """A client whose notification handler waits for the test to open a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.heard: List[int] = []  # shared with the per-connection copy of this object

    async def note(self, i: int) -> None:
        await self.gate.wait()
        self.heard.append(i)


async def test_a_client_flooded_with_notifications_stays_within_its_budget() -> None:
    with ServerThread(quitter_app()) as srv:
        listener = Listener()
        async with WebSocketRpcClient(srv.url(), listener, max_pending_requests=100) as client:
            flood = asyncio.ensure_future(client.other.flood(n=20_000))
            channel = client.channel
            assert channel is not None
            for _ in range(10_000):  # bounded: the reader pauses long before
                if channel.reading_paused:
                    break
                await asyncio.sleep(0.001)
            assert channel.running_count == 100 and len(asyncio.all_tasks()) < 100 + 20
            listener.gate.set()
            assert (await asyncio.wait_for(flood, 60)).result == 20_000
            for _ in range(10_000):
                if len(listener.heard) == 20_000:
                    break
                await asyncio.sleep(0.001)
            assert len(listener.heard) == 20_000 and channel.dropped_notifications == 0


async def test_a_peer_that_reads_nothing_is_dropped_after_send_timeout(caplog: Any) -> None:
    import socket

    with ServerThread(quitter_app()) as srv:
        # A raw TCP client: it completes the handshake, asks for a flood, then reads nothing.
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(
                b"GET /impatient HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert b"101" in sock.recv(4096).split(b"\r\n", 1)[0]
            payload = json.dumps({"jsonrpc": "2.0", "method": "flood", "params": {"n": 10_000_000}, "id": 1}).encode()
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            # Now read nothing; the server must notice within send_timeout and drop us.
            for _ in range(3_000):  # bounded wait for another thread's doing
                if any("read nothing" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        logged = [r.getMessage() for r in caplog.records if "read nothing" in r.getMessage()]
        assert logged and "127.0.0.1:" in logged[0], logged


def _handshake(sock: Any, path: str) -> None:
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")


async def test_a_message_started_and_never_finished_closes_with_1008() -> None:
    import socket

    with ServerThread(quitter_app()) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            _handshake(sock, "/strict")
            # A masked text frame announcing 100 bytes, of which 10 ever arrive (slowloris).
            sock.sendall(bytes([0x81, 0x80 | 100]) + b"\x00\x00\x00\x00" + b'{"jsonrpc"')
            sock.settimeout(30)
            closing = sock.recv(2)  # the server's close frame: opcode 8, then its length
            assert closing[0] == 0x88
            body = sock.recv(closing[1] & 0x7F)
            assert int.from_bytes(body[:2], "big") == 1008 and b"receive timeout" in body[2:]
