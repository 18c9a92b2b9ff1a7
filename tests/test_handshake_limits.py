"""The native server's limits on the opening handshake, tried with raw clients (issue 26, "The door").

Before a connection is upgraded, the native server (``fastwsrpc.server``)
reads an HTTP request from anyone who can reach the port. What bounds it:

* websockets' HTTP parser (``websockets.http11``), which the server uses:
  a request line or header line of at most ``MAX_LINE_LENGTH`` (8192) bytes,
  at most ``MAX_NUM_HEADERS`` (128) headers, no body, no transfer coding;
  each breach is answered ``HTTP 400`` and the connection is closed;
* the server's own cap on the whole request, 64 KiB (``fastwsrpc.native._MAX_HANDSHAKE``):
  beyond it, an HTTP 4xx (or the connection is closed);
* ``open_timeout`` of ``WebSocketRpcServer`` (10 s by default): a handshake
  not finished by then (authentication included) is dropped, with no answer.

Each case is a raw TCP client; after each, the server must still serve a
normal client. ``docs/guide/security.md`` gives the same numbers. Nothing here
sleeps to wait for something: reads are bounded by ``BOUND``; the slow client's
pauses are its pace.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
from typing import Any, AsyncIterator, Callable, List, Tuple

import pytest
from websockets import http11

from fastwsrpc import WebSocketRpcClient
from fastwsrpc.server import WebSocketRpcServer

from .app import ServerMethods

pytestmark = pytest.mark.e2e

#: Longest wait for anything: the server answers or closes long before.
BOUND = 10.0
#: What the documentation says (docs/guide/security.md); the first test keeps it true.
MAX_LINE_LENGTH = 8192
MAX_NUM_HEADERS = 128
MAX_REQUEST = 64 * 1024
DEFAULT_OPEN_TIMEOUT = 10.0
#: The open_timeout of the server under test.
OPEN_TIMEOUT = 0.5


def test_the_documented_numbers_are_the_real_ones() -> None:
    assert http11.MAX_LINE_LENGTH == MAX_LINE_LENGTH
    assert http11.MAX_NUM_HEADERS == MAX_NUM_HEADERS
    from fastwsrpc import native

    assert native._MAX_HANDSHAKE == MAX_REQUEST
    assert inspect.signature(WebSocketRpcServer).parameters["open_timeout"].default == DEFAULT_OPEN_TIMEOUT


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A native server on 127.0.0.1 (a port of its own) with ``open_timeout=OPEN_TIMEOUT``."""
    server = WebSocketRpcServer(ServerMethods(), open_timeout=OPEN_TIMEOUT)
    async with server.listen("127.0.0.1", 0):
        yield server.sockets[0].getsockname()[1]


def request(*headers: str, target: str = "/ws", body: bytes = b"") -> bytes:
    """An upgrade request, valid apart from what ``headers`` / ``target`` / ``body`` add."""
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def answer(reader: asyncio.StreamReader) -> Tuple[str, bytes]:
    """What the server did: ``("HTTP 400", body)``, or ``("closed", b"")`` for a close or reset without an answer."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    except asyncio.IncompleteReadError as eof:
        return ("closed", b"") if not eof.partial else ("cut", bytes(eof.partial[:200]))
    except ConnectionResetError:
        return "closed", b""
    status = head.split(b" ", 2)[1].decode()
    body = b""
    if status != "101":
        try:
            for _ in range(1000):  # bounded: the server closes after its answer
                chunk = await asyncio.wait_for(reader.read(65536), BOUND)
                if not chunk:
                    break
                body += chunk
        except ConnectionResetError:
            pass
    return f"HTTP {status}", body


async def send_at_once(port: int, data: bytes) -> Tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await answer(reader)
    finally:
        writer.close()


async def still_serves(port: int) -> None:
    async with WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws") as client:
        assert (await client.other.add(a=1, b=2)).result == 3


# Each case: the bytes sent at once, and the words the 400's body must hold.
REFUSED_WITH_400: List[Tuple[str, bytes, bytes]] = [
    ("request-line", request(target="/ws?" + "a" * (MAX_LINE_LENGTH + 100)), b"8192"),
    ("header-line", request("X-Big: " + "a" * (MAX_LINE_LENGTH + 100)), b"8192"),
    ("200-headers", request(*(f"X-H{i}: v" for i in range(200))), b"128 headers"),
    ("body", request("Content-Length: 5", body=b"hello"), b"body"),
    ("transfer-coding", request("Transfer-Encoding: chunked", body=b"0\r\n\r\n"), b"transfer"),
    ("not-http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64) + b"\r\n\r\n", b"malformed"),
]


@pytest.mark.parametrize(("data", "words"), [pytest.param(d, w, id=i) for i, d, w in REFUSED_WITH_400])
async def test_a_request_over_a_parser_limit_gets_400(port: int, data: bytes, words: bytes) -> None:
    what, body = await send_at_once(port, data)
    assert what == "HTTP 400", (what, body)
    assert words in body, body
    await still_serves(port)


#: Requests whose every line is within the parser's limits, but whose total is not (64 KiB is the cap).
OVER_THE_CAP = [
    pytest.param(100, 1000, id="100-headers-of-1KB"),  # ~100 KB
    pytest.param(MAX_NUM_HEADERS - 8, MAX_LINE_LENGTH - 200, id="120-headers-of-8KB"),  # ~0.9 MiB
]


@pytest.mark.parametrize(("count", "size"), OVER_THE_CAP)
async def test_a_request_over_the_total_cap_is_refused(port: int, count: int, size: int) -> None:
    """Refused with a 4xx, or the connection closed: never upgraded (its headers would live as long as it)."""
    data = request(*(f"X-H{i}: {'a' * size}" for i in range(count)))
    assert len(data) > MAX_REQUEST
    what, body = await send_at_once(port, data)
    assert what == "closed" or what.startswith("HTTP 4"), (
        f"a {len(data)}-byte request (cap {MAX_REQUEST}) got {what} {body[:200]!r}"
    )
    await still_serves(port)


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` one byte per write, at a slow client's pace, until the server drops the connection."""
    for byte in data:
        if writer.is_closing():
            return
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0.01)  # the pace of a slow client, not a wait for something


SLOW_CLIENTS: List[Tuple[str, Callable[[], bytes]]] = [
    # headers that never end: each byte alone is well within every size limit
    ("one-byte-per-write", lambda: request()[:-2] + b"X-Slow: " + b"a" * 5000),
    # the whole request but for its last CRLF, then silence
    ("almost-complete-then-silent", lambda: request()[:-2]),
    ("silent", lambda: b""),
]


@pytest.mark.parametrize("make", [pytest.param(m, id=i) for i, m in SLOW_CLIENTS])
async def test_a_handshake_not_done_within_open_timeout_is_dropped(port: int, make: Callable[[], bytes]) -> None:
    """The connection is closed (no HTTP answer) once ``open_timeout`` is over."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sender = asyncio.ensure_future(trickle(writer, make()))
    try:
        what, body = await answer(reader)
        assert what == "closed", (what, body)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    await still_serves(port)


async def test_an_authenticate_that_hangs_is_cancelled_with_its_connection() -> None:
    """``open_timeout`` covers authentication: the hung call is cancelled, not left behind."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def authenticate(_: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = WebSocketRpcServer(ServerMethods(), open_timeout=OPEN_TIMEOUT, authenticate=authenticate)
    async with server.listen("127.0.0.1", 0):
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request())
        await asyncio.wait_for(started.wait(), BOUND)
        what, _ = await answer(reader)
        assert what == "closed"
        await asyncio.wait_for(cancelled.wait(), BOUND)
        writer.close()
        for _ in range(1000):  # the task leaves the server's set once it has ended
            if not server._tasks:
                break
            await asyncio.sleep(0)
        assert not server._tasks
