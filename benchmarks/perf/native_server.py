"""The native server of ``measure.py``'s figures, in a process of its own (callgrind runs this one only).

    python benchmarks/perf/native_server.py PORT_FILE [--tracemalloc] [--asyncio]

Listens on a free 127.0.0.1 port, written to PORT_FILE once it accepts, with
the methods the client drives: ``note`` (counted), ``notes`` (the count),
``add``, ``mem`` (this process's RSS and, with ``--tracemalloc``, the bytes
tracemalloc sees after a collection) and ``stop`` (ends the process cleanly,
so that callgrind writes its counts). Settings as benchmarks/compare.py's
native contender; uvloop as there, unless ``--asyncio``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tracemalloc
from typing import Any, Dict

import fastwsrpc
from fastwsrpc import RpcMethodsBase, _accel
from fastwsrpc.server import WebSocketRpcServer

MIB = 1024 * 1024


def rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def main(port_file: str) -> None:
    state = {"notes": 0}
    stopped = asyncio.Event()

    class Methods(RpcMethodsBase):
        async def note(self, i: int = 0) -> None:
            state["notes"] += 1

        async def notes(self) -> int:
            return state["notes"]

        async def add(self, a: int, b: int) -> int:
            return a + b

        async def mem(self) -> Dict[str, int]:
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
            return {"rss": rss(), "traced": traced}

        async def stop(self) -> None:
            asyncio.get_running_loop().call_later(0.05, stopped.set)

    server = WebSocketRpcServer(Methods(), max_pending_requests=100_000, max_message_size=16 * MIB)
    async with server.listen("127.0.0.1", 0, backlog=4096):
        with open(port_file + ".tmp", "w") as f:
            f.write(str(server.sockets[0].getsockname()[1]))
        os.replace(port_file + ".tmp", port_file)
        await stopped.wait()
        server.close()


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    print(f"fastwsrpc {fastwsrpc.__file__} twin={_accel.IMPLEMENTATION} ({_accel.impl.__file__})", file=sys.stderr)
    if "--tracemalloc" in sys.argv:
        tracemalloc.start(1)
    run: Any = asyncio.run
    if "--asyncio" not in sys.argv:
        import uvloop

        run = uvloop.run
    run(main(sys.argv[1]))
