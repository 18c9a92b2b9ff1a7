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
        for i in range(n):
            await self.channel.notify("note", {"i": i})
        return n

    async def quit_with(self, code: int) -> None:
        """Close this connection with ``code``, as a server that wants the client gone."""
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


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    """A bare websockets server: answers ``deep`` with a reply nested DEEP levels, anything else normally."""

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if "id" not in msg or "method" not in msg:
                continue
            if msg["method"] == "deep":
                await ws.send('{"jsonrpc":"2.0","id":' + str(msg["id"]) + ',"result":' + "[" * DEEP + "]" * DEEP + "}")
            else:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": "ok"}))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


async def test_a_deeply_nested_reply_does_not_kill_the_client(hostile: str) -> None:
    async with WebSocketRpcClient(hostile, RpcMethodsBase()) as client:
        with pytest.raises(RpcTimeoutError):  # the reply could not be read, so its call times out
            await client.call("deep", timeout=0.5)
        assert client.is_connected
        assert (await client.call("other", timeout=10)).result == "ok"


async def test_a_read_loop_failure_closes_fails_pending_calls_and_reconnects() -> None:
    with ServerThread(quitter_app()) as srv:
        client = WebSocketRpcClient(srv.url(), RpcMethodsBase(), auto_reconnect=True, reconnect_delay=0.01)
        async with client:
            first = client.channel
            assert first is not None
            failures: List[int] = []
            decode = first._decode

            def broken(frame: Any, *args: Any) -> Any:
                if not failures:
                    failures.append(1)
                    raise RuntimeError("a bug in the read loop")
                return decode(frame, *args)

            first._decode = broken
            with pytest.raises(RpcChannelClosedError):
                await client.other.add(a=1, b=2)
            assert first.is_closed() and "internal error" in first.close_reason
            await client.wait_connected(30)  # waits for a real connection, not the dead one
            assert client.is_connected and client.channel is not first and client.reconnects == 1
            assert (await client.other.add(a=1, b=2)).result == 3


@pytest.mark.parametrize("code", [1008, 1011])
async def test_no_reconnect_after_a_close_code_that_says_do_not_come_back(code: int) -> None:
    with ServerThread(quitter_app()) as srv:
        client = WebSocketRpcClient(srv.url(), RpcMethodsBase(), auto_reconnect=True, reconnect_delay=0.01)
        async with client:
            with pytest.raises(RpcChannelClosedError):
                await client.other.quit_with(code=code)
            await asyncio.wait_for(client.wait_on_reader(), 30)
            assert client.reconnects == 0 and not client.is_connected and client.close_code == code


async def test_reconnect_delay_and_max_reconnect_attempts_are_obeyed() -> None:
    srv = ServerThread(quitter_app()).start()
    delays: List[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    client = WebSocketRpcClient(
        srv.url(), RpcMethodsBase(), auto_reconnect=True, reconnect_delay=0.25, max_reconnect_attempts=3
    )
    client._sleep = record  # the waits are recorded, not slept
    async with client:
        srv.stop()  # the server goes away for good
        await asyncio.wait_for(client.wait_on_reader(), 30)
    # First the reconnect_delay, then two more attempts backing off from it (2d, 4d, jitter up to 25%).
    assert len(delays) == 3 and delays[0] == 0.25
    assert 0.5 <= delays[1] <= 0.5 * 1.25 and 1.0 <= delays[2] <= 1.0 * 1.25
    assert isinstance(client.last_error, RpcConnectionError) and client.reconnects == 0


async def test_fractional_ids_are_echoed(server: ServerThread) -> None:
    from websockets.asyncio.client import connect

    async with connect(server.url("/ws")) as ws:
        await ws.send('{"jsonrpc":"2.0","method":"add","params":{"a":1,"b":2},"id":1.5}')
        assert json.loads(await ws.recv()) == {"jsonrpc": "2.0", "id": 1.5, "result": 3}
        await ws.send('{"jsonrpc":"2.0","method":"add","params":{"a":1,"b":2},"id":-0.25}')
        assert json.loads(await ws.recv())["id"] == -0.25


async def test_deeply_nested_frames_are_a_parse_error_and_the_connection_lives(server: ServerThread) -> None:
    from websockets.asyncio.client import connect

    async with connect(server.url("/ws")) as ws:
        for _ in range(3):
            await ws.send('{"jsonrpc":"2.0","method":"add","params":' + "[" * DEEP + "]" * DEEP + ',"id":1}')
            answer = json.loads(await ws.recv())
            assert answer["error"]["code"] == -32700 and answer["id"] is None
        await ws.send('{"jsonrpc":"2.0","method":"add","params":{"a":1,"b":2},"id":2}')
        assert json.loads(await ws.recv())["result"] == 3
