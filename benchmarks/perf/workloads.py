"""One channel workload, run in a process of its own (under callgrind by ``measure.py``).

    python benchmarks/perf/workloads.py KIND N

KIND is one of:

* ``notes``: N notifications fed to one channel on a memory pair (``feed``), then run;
* ``calls``: N calls fed the same way; each is answered through the memory pair;
* ``inflight64``: two channels back to back, the client side making N calls of
  ``add`` with 64 in flight (the outgoing side is measured too).

Every kind first does ``WARMUP`` messages of the same kind, so that what is
done once per method or per channel (handler lookup, first task) is in the run
with N = 0 too and cancels out: ``(Ir(N) - Ir(0)) / N`` is the cost of one
message. The twin is chosen as the package does (``FASTWSRPC_NO_EXTENSIONS=1``:
pure); which tree and twin were imported is printed on stderr, so a run on the
wrong tree shows.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import fastwsrpc
from fastwsrpc import RpcMethodsBase, _accel
from fastwsrpc.channel import RpcChannel
from fastwsrpc.testing import memory_pair

WARMUP = 200
LIMIT = 1_000_000  # max_pending_requests: nothing is queued or refused in these runs


class Methods(RpcMethodsBase):
    async def note(self, i: int = 0) -> None:
        pass

    async def add(self, a: int, b: int) -> int:
        return a + b


NOTE = json.dumps({"jsonrpc": "2.0", "method": "note", "params": {"i": 1}}).encode()
CALL = json.dumps({"jsonrpc": "2.0", "method": "add", "params": {"a": 1, "b": 2}, "id": 7}).encode()


async def fed(frame: bytes, n: int) -> None:
    """Feed ``n`` frames to one channel as a reader would, then let its handlers run to the end."""
    a, _peer = memory_pair(10 * (n + WARMUP) + 16)  # the answers never fill the pipe
    channel = RpcChannel(Methods(), a, max_pending_requests=LIMIT)
    for count in (WARMUP, n):
        for _ in range(count):
            channel.feed(frame)
        while channel.running_count:
            await asyncio.sleep(0)
    await channel.close()


async def in_flight(n: int, window: int = 64) -> None:
    a, b = memory_pair(1000)
    server = RpcChannel(Methods(), a, max_pending_requests=LIMIT)
    client = RpcChannel(RpcMethodsBase(), b, max_pending_requests=LIMIT)
    readers = [asyncio.ensure_future(server.run()), asyncio.ensure_future(client.run())]
    for count in (WARMUP, n):
        todo = iter(range(count))

        async def worker(todo: Any = todo) -> None:
            for i in todo:
                await client.other.add(a=i, b=1)

        await asyncio.gather(*(worker() for _ in range(window)))
    await client.close()
    await server.close()
    for reader in readers:
        try:
            await reader
        except BaseException:
            pass


def main() -> None:
    kind, n = sys.argv[1], int(sys.argv[2])
    print(f"fastwsrpc {fastwsrpc.__file__} twin={_accel.IMPLEMENTATION} ({_accel.impl.__file__})", file=sys.stderr)
    runs: Any = {"notes": lambda: fed(NOTE, n), "calls": lambda: fed(CALL, n), "inflight64": lambda: in_flight(n)}
    asyncio.run(runs[kind]())


if __name__ == "__main__":
    main()
