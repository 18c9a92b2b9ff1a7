"""1 MiB echoes, one side of them at a time: for profilers (callgrind, perf, cProfile) and CPU per echo.

    python benchmarks/bigmsg/echo.py serve KIND PORT_FILE       # KIND: native | fastapi | picows
    python benchmarks/bigmsg/echo.py drive KIND PORT N [--size BYTES] [--calls N]
                                                                # KIND: native | picows

``serve`` listens on a free 127.0.0.1 port, written to PORT_FILE once it
accepts, with compare.py's ``echo`` and ``add`` methods (picows: compare.py's
bare dispatcher); it ends cleanly on SIGTERM or SIGINT (so that callgrind
writes its counts). ``drive`` makes two warm-up echoes, then N echoes of a
string of ``--size`` bytes (1 MiB) one after the other, then ``--calls``
sequential small calls of ``add``; it prints one JSON line: wall time, and its
own CPU time, of the timed part. Compression is off on both sides (none is
offered). ``callgrind.py`` next to this file runs either side under valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/: compare.py's contenders

MIB = 1024 * 1024


async def _until_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _announce(port_file: str, port: int) -> None:
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, port_file)


async def serve_native(port_file: str) -> None:
    from compare import make_methods

    import fastwsrpc
    from fastwsrpc.server import WebSocketRpcServer

    server = WebSocketRpcServer(
        make_methods(fastwsrpc, {"notes": 0}), max_pending_requests=100_000, max_message_size=16 * MIB
    )
    async with server.listen("127.0.0.1", 0, backlog=64) as listening:
        port = _port_of(listening, server)
        _announce(port_file, port)
        await _until_signal()


def _port_of(listening: Any, server: Any) -> int:
    for obj in (listening, server, getattr(server, "_server", None)):
        sockets = getattr(obj, "sockets", None)
        if sockets:
            return int(sockets[0].getsockname()[1])
    raise RuntimeError("no listening socket found")


async def serve_picows(port_file: str) -> None:
    from compare import _bare_answer
    from picows import WSListener, WSMsgType, ws_create_server

    state = {"notes": 0}

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                answer = _bare_answer(state, frame.get_payload_as_memoryview())
                if answer is not None:
                    transport.send(WSMsgType.TEXT, answer)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(lambda _: Listener(), "127.0.0.1", 0, max_frame_size=16 * MIB)
    async with server:
        _announce(port_file, int(server.sockets[0].getsockname()[1]))
        await _until_signal()


async def serve_fastapi(port_file: str) -> None:
    import socket

    import uvicorn
    from compare import make_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(make_app("fastwsrpc"), log_level="error", loop="none", ws_max_size=16 * MIB, lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    _announce(port_file, int(sock.getsockname()[1]))
    await _until_signal()
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def drive(kind: str, port: int, n: int, size: int, calls: int) -> Dict[str, Any]:
    from compare import Driver

    d = Driver("floor-picows" if kind == "picows" else "native[cython]", f"ws://127.0.0.1:{port}/ws")
    conn = await d.open()
    payload = "x" * size
    try:
        for _ in range(2):
            assert len(await d.call(conn, "echo", text=payload)) == size
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            assert len(await d.call(conn, "echo", text=payload)) == size
        cpu1, t1 = time.process_time(), time.perf_counter()
        for i in range(calls):
            await d.call(conn, "add", a=i, b=1)
        cpu2, t2 = time.process_time(), time.perf_counter()
    finally:
        await d.close(conn)
    return {
        "echoes": n,
        "echo_wall_ms": (t1 - t0) / max(n, 1) * 1e3,
        "echo_client_cpu_ms": (cpu1 - cpu0) / max(n, 1) * 1e3,
        "echo_MB_s": n * 2 * size / 1e6 / (t1 - t0) if n else 0.0,
        "calls": calls,
        "call_wall_us": (t2 - t1) / max(calls, 1) * 1e6,
        "call_client_cpu_us": (cpu2 - cpu1) / max(calls, 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("kind", choices=["native", "fastapi", "picows"])
    s.add_argument("port_file")
    s.add_argument("--asyncio", action="store_true", help="asyncio's loop instead of uvloop")
    c = sub.add_parser("drive")
    c.add_argument("kind", choices=["native", "picows"])
    c.add_argument("port", type=int)
    c.add_argument("n", type=int)
    c.add_argument("--size", type=int, default=MIB)
    c.add_argument("--calls", type=int, default=0)
    c.add_argument("--asyncio", action="store_true", help="asyncio's loop instead of uvloop")
    args = parser.parse_args()
    run: Any = asyncio.run
    if not args.asyncio:
        import uvloop

        run = uvloop.run
    if args.cmd == "serve":
        servers = {"native": serve_native, "fastapi": serve_fastapi, "picows": serve_picows}
        run(servers[args.kind](args.port_file))
    else:
        print(json.dumps(run(drive(args.kind, args.port, args.n, args.size, args.calls))))


if __name__ == "__main__":
    main()
