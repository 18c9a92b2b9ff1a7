"""Echo peers for the Autobahn test (``tests/test_autobahn.py``, ``benchmarks/autobahn.py``).

The fuzzing client of kosoku drives :func:`echo_server` (the native server's
connection class, :class:`fastwsrpc.server._ServerWebSocket`, its opening
handshake included, with an echo in place of the RPC channel); its fuzzing
server is driven by :func:`run_echo_client` (the native client,
:func:`fastwsrpc.native.connect_native`). Both echo text as text and binary as
binary, through the connection's public ``receive`` / ``send`` and its
``opcodes`` record, as any application on the native transport would.

``compression``: what either peer agrees of permessage-deflate (``None``, off;
``"deflate"`` or a :class:`~fastwsrpc.config.CompressionConfig`), for the
12.* and 13.* cases. The echo server agrees it as ``WebSocketRpcServer`` does
(websockets' extension factory, then the native codec); the echo client offers
it on every case connection.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Set

from websockets.http11 import Request
from websockets.server import ServerProtocol

from fastwsrpc.config import compression_config
from fastwsrpc.native import NativeWebSocket, connect_native, server_extensions
from fastwsrpc.server import _ServerWebSocket
from fastwsrpc.transport import TransportClosed

#: Autobahn's 9.* cases send messages up to 16 MiB (and 12.*/13.* inflate to less).
MAX_SIZE = 64 * 2**20
AGENT = "fastwsrpc"


async def echo(conn: NativeWebSocket) -> None:
    """Send every message back as it came (text as text, binary as binary) until the stream ends."""
    assert conn.opcodes is not None
    try:
        while True:
            payload = await conn.receive()
            opcode = conn.opcodes.popleft()
            await conn.send(payload if isinstance(payload, bytes) else payload.encode(), opcode)
    except (TransportClosed, Exception):
        pass
    # The stream is over: finish the closing handshake (an echo of the peer's close
    # frame is already out; after a protocol error our close is) and wait for TCP.
    await conn.close()


class _EchoServer:
    """What ``_ServerWebSocket`` reads from its ``WebSocketRpcServer``: limits, and where an upgrade goes."""

    open_timeout = 10.0
    close_timeout = 2.0
    ping_interval = None
    ping_timeout = None
    _binary = False

    def __init__(self, speedups: Any, compression: Any = None) -> None:
        self.speedups = speedups
        self.compression = compression_config(compression)
        self.settings = types.SimpleNamespace(max_message_size=MAX_SIZE)
        self.tasks: Set[asyncio.Task[None]] = set()

    def _start_connection(self, conn: _ServerWebSocket, request: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(conn, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, conn: _ServerWebSocket, request: Request) -> None:
        handshake = ServerProtocol(max_size=None, extensions=server_extensions(self.compression))
        response = handshake.accept(request)
        if response.status_code != 101:
            conn.refused(response, handshake)
            return
        conn.opcodes = deque()
        conn.accepted(response, handshake, self.compression)
        await echo(conn)


@asynccontextmanager
async def echo_server(speedups: Any, compression: Any = None) -> AsyncIterator[int]:
    """Serve the echo on 127.0.0.1 for the block; yields the port."""
    loop = asyncio.get_running_loop()
    stub = _EchoServer(speedups, compression)
    server = await loop.create_server(lambda: _ServerWebSocket(stub), "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(stub.tasks):
            task.cancel()
        if stub.tasks:
            await asyncio.wait(stub.tasks, timeout=5)
        await server.wait_closed()


async def _connect(url: str, speedups: Any, compression: Any = None) -> NativeWebSocket:
    return await connect_native(
        url,
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=2.0,
        open_timeout=10.0,
        speedups=speedups,
        keep_opcodes=True,
        compression=compression,
    )


async def run_echo_client(
    address: str, port: int, speedups: Any, *, concurrency: int = 8, compression: Any = None
) -> None:
    """Play every case of the fuzzing server at ``address:port``, ``concurrency`` at a time; then its reports."""
    base = f"ws://{address}:{port}"
    conn = await _connect(f"{base}/getCaseCount", speedups)
    count = int(await conn.receive())
    await conn.close()
    todo = iter(range(1, count + 1))

    async def worker() -> None:
        for case in todo:
            try:
                conn = await _connect(f"{base}/runCase?case={case}&agent={AGENT}", speedups, compression)
            except Exception:
                continue  # the case's verdict says what went wrong
            await echo(conn)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    conn = await _connect(f"{base}/updateReports?agent={AGENT}", speedups)
    await conn.close()
