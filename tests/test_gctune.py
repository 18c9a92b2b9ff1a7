"""The garbage collector's pace (fastwsrpc/gctune.py): what ``fastwsrpc serve`` sets, and how to leave it."""

from __future__ import annotations

import gc
from typing import Any, Iterator

import pytest

from fastwsrpc.cli import build_parser
from fastwsrpc.gctune import GC_THRESHOLD, tune_gc


@pytest.fixture
def restored() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_tune_gc_sets_the_young_threshold_and_keeps_the_older_ones(restored: None) -> None:
    gc.set_threshold(700, 11, 12)
    tune_gc()
    assert gc.get_threshold() == (GC_THRESHOLD, 11, 12)
    tune_gc(1234)
    assert gc.get_threshold() == (1234, 11, 12)


def test_zero_leaves_pythons_setting(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(0)
    tune_gc(-5)
    assert gc.get_threshold() == (700, 10, 10)


def test_serve_tunes_by_default_and_takes_zero_to_leave_it() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "app:Methods"]).gc_threshold == GC_THRESHOLD
    assert parser.parse_args(["serve", "app:Methods", "--gc-threshold", "0"]).gc_threshold == 0


#: Peers in another process (so that only the server's objects are counted here): ``n`` upgraded
#: connections, each subscribed to one topic when asked; "ready" once every answer is read.
PEERS = r"""
import socket, sys
from fastwsrpc._speedups_py import build_frame
port, n, subscribe = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
handshake = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
request = build_frame(1, b'{"jsonrpc":"2.0","id":1,"method":"$/subscribe","params":{"topics":["t"]}}', True)
held = []
for _ in range(n):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(handshake)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    if subscribe:
        sock.sendall(request)
        while b'"result"' not in data:
            data += sock.recv(4096)
    held.append(sock)
print("ready", flush=True)
sys.stdin.read()
"""

#: GC-tracked objects the server holds per connection. CPython 3.11: 45 idle and 79 subscribed on
#: asyncio's loop (the tests'), 36 and 70 on uvloop's. A full collection walks every one of them, so
#: its pause grows with these counts (see fastwsrpc/gctune.py); the margin is for other Pythons.
TRACKED_IDLE = 60
TRACKED_SUBSCRIBED = 100


async def tracked_per_connection(speedups: Any, n: int, subscribe: bool) -> float:
    import asyncio
    import subprocess
    import sys

    from fastwsrpc import RpcMethodsBase
    from fastwsrpc.server import WebSocketRpcServer

    from .support import eventually

    server = WebSocketRpcServer(RpcMethodsBase(), speedups=speedups, ping_interval=600)
    async with server.listen("127.0.0.1", 0):
        port = server.sockets[0].getsockname()[1]
        gc.collect()
        before = len(gc.get_objects())
        args = [str(port), str(n), "1" if subscribe else "0"]
        peers = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PEERS, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert peers.stdout is not None
            assert await asyncio.wait_for(peers.stdout.readline(), 60) == b"ready\n"
            await eventually(lambda: len(server.channels) == n and not server._tasks, timeout=30)
            gc.collect()
            return (len(gc.get_objects()) - before) / n
        finally:
            peers.kill()
            await peers.wait()


@pytest.mark.parametrize("subscribe", [False, True], ids=["idle", "subscribed"])
async def test_a_connection_gives_the_garbage_collector_few_objects_to_walk(speedups: Any, subscribe: bool) -> None:
    per = await tracked_per_connection(speedups, 150, subscribe)
    assert per < (TRACKED_SUBSCRIBED if subscribe else TRACKED_IDLE), per
