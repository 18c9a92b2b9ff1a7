"""End-to-end benchmarks: calls, notifications, a large echo and a stream, on both twins.

Each round is one unit of work, timed from the client's first send to the
last answer (or, for notifications, until the server has handled the last
one); one round of ``test_call_round_trip`` is 100 calls made one after the
other, so a call takes a hundredth of its time. The servers: ``memory`` (two
channels on ``fastwsrpc.testing.memory_pair``, no socket: the channel alone),
``native`` (``fastwsrpc.server`` on loopback) and ``fastapi`` (the FastAPI
endpoint under uvicorn on loopback), each with our client on its native
transport. Client and servers share one event loop (see ``conftest.py``).

Run: ``pytest benchmarks/test_e2e.py --benchmark-only``; docs/guide/benchmarks.md
says how to record a baseline and gate on it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Dict, Optional

import pytest

from fastwsrpc import RpcMethodsBase
from fastwsrpc.testing import channel_pair

MIB = 1024 * 1024
SEQUENTIAL = 100
IN_FLIGHT, IN_FLIGHT_CALLS = 64, 1024
NOTIFICATIONS = 1000
ITEMS = 1000
ECHO = "x" * MIB


def cpu_time(group: str) -> Any:
    """A benchmark of ``group``, timed in CPU seconds of this process: both ends of the connection run here,
    and the time other processes have the CPU is not counted (docs/guide/benchmarks.md, "Why CPU time")."""
    return pytest.mark.benchmark(group=group, timer=time.process_time)


class Tally:
    """Counts the server's notifications and wakes the benchmark at the last one it waits for."""

    def __init__(self) -> None:
        self.left = 0
        self.done: Optional[asyncio.Future[None]] = None

    def expect(self, count: int) -> asyncio.Future[None]:
        self.left = count
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def hit(self) -> None:
        self.left -= 1
        if self.left == 0 and self.done is not None:
            self.done.set_result(None)


TALLY = Tally()


class Bench(RpcMethodsBase):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, text: str) -> str:
        return text

    async def note(self) -> None:
        TALLY.hit()

    async def ticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


@pytest.fixture(scope="module")
def callers(loopback: Any, twin: Any) -> Dict[str, Any]:
    """What calls each server: a channel on memory_pair, a client of the native server, one of the FastAPI endpoint."""
    _, memory = loopback.enter(channel_pair(Bench(), speedups=twin, max_pending_requests=10_000))
    native = loopback.start_native(Bench(), max_pending_requests=10_000, max_message_size=4 * MIB)
    fastapi = loopback.start_fastapi(Bench(), max_pending_requests=10_000, max_message_size=4 * MIB)
    return {
        "memory": memory,
        "native": loopback.connect(native.url, max_message_size=4 * MIB),
        "fastapi": loopback.connect(fastapi.url, max_message_size=4 * MIB),
    }


SOCKETS = pytest.mark.parametrize("server", ["native", "fastapi"])


@cpu_time("call round trip (100 calls)")
@pytest.mark.parametrize("server", ["memory", "native", "fastapi"])
def test_call_round_trip(benchmark: Any, loopback: Any, callers: Dict[str, Any], server: str) -> None:
    add = callers[server].other.add

    async def calls() -> None:
        for i in range(SEQUENTIAL):
            await add(a=i, b=1)

    loopback.time(benchmark, calls, 100)


@cpu_time("64 calls in flight (1,024 calls)")
@SOCKETS
def test_calls_in_flight(benchmark: Any, loopback: Any, callers: Dict[str, Any], server: str) -> None:
    add = callers[server].other.add

    async def worker(todo: Any) -> None:
        for i in todo:
            await add(a=i, b=1)

    async def calls() -> None:
        todo = iter(range(IN_FLIGHT_CALLS))
        await asyncio.gather(*(worker(todo) for _ in range(IN_FLIGHT)))

    loopback.time(benchmark, calls, 50)


@cpu_time("1,000 notifications")
@SOCKETS
def test_notifications(benchmark: Any, loopback: Any, callers: Dict[str, Any], server: str) -> None:
    notify = callers[server].notify

    async def notes() -> None:
        done = TALLY.expect(NOTIFICATIONS)
        for _ in range(NOTIFICATIONS):
            await notify("note")
        await done

    loopback.time(benchmark, notes, 60)


@cpu_time("1 MiB echo")
@SOCKETS
def test_echo_1mib(benchmark: Any, loopback: Any, callers: Dict[str, Any], server: str) -> None:
    echo = callers[server].other.echo

    async def one() -> None:
        assert len((await echo(text=ECHO)).result) == MIB

    loopback.time(benchmark, one, 50)


@cpu_time("stream of 1,000 items")
@SOCKETS
def test_stream(benchmark: Any, loopback: Any, callers: Dict[str, Any], server: str) -> None:
    client = callers[server]

    async def consume() -> None:
        count = 0
        async for _ in client.other.ticks.stream(n=ITEMS):
            count += 1
        assert count == ITEMS

    loopback.time(benchmark, consume, 50)
