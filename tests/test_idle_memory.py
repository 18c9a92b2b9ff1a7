"""An idle native connection is cheap: what it keeps, and that it still does everything.

docs/guide/scale.md ("Where the bytes of an idle connection go") has the
figures. Three things make them, each pinned here: the handshake's headers kept
in one read-only string (:class:`~fastwsrpc.server.FrozenHeaders`, read as
websockets' ``Headers`` are); no task and no coroutine frame while nothing
waits for the reader (it *parks*: ``RpcChannel.run``'s ``park``), with
everything a connection does still done, in the reader's context; and the heap
an idle connection holds, the same at 100 and at 300 connections and under a
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import dataclasses
import gc
import os
import pickle
import tracemalloc
from typing import Any, AsyncIterator, Callable, List, Tuple

import pytest
from websockets.datastructures import Headers, MultipleValuesError

import fastwsrpc
from fastwsrpc import RpcMethodsBase, WebSocketRpcClient
from fastwsrpc.server import FrozenHeaders, HandshakeRequest, WebSocketRpcServer

from .support import eventually

pytestmark = pytest.mark.e2e

ITEMS = [
    ("Host", "127.0.0.1:9000"),
    ("Upgrade", "websocket"),
    ("X-Token", "a: b, c"),  # ": " inside a value
    ("x-token", "second"),  # a repeated name, another case
    ("Empty", ""),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
]


# ------------------------------------------------------------------ the headers
def test_frozen_headers_read_as_websockets_headers_do() -> None:
    plain = Headers(ITEMS)
    frozen = FrozenHeaders(plain)
    assert list(frozen.raw_items()) == list(plain.raw_items()) == ITEMS
    assert list(frozen) == list(plain) and len(frozen) == len(plain) == 5
    assert str(frozen) == str(plain) and frozen.serialize() == plain.serialize()
    assert frozen == plain and plain == frozen and frozen == FrozenHeaders(plain)
    assert frozen != Headers(ITEMS[:-1]) and frozen != {"host": "x"}
    for name in ("host", "HOST", "Upgrade", "empty", "sec-websocket-key"):
        assert frozen[name] == plain[name] and frozen.get(name) == plain.get(name) and name in frozen
    assert frozen.get_all("X-TOKEN") == plain.get_all("X-TOKEN") == ["a: b, c", "second"]
    assert frozen.get_all("nope") == [] and frozen.get("nope", "d") == "d" and "nope" not in frozen
    not_a_name: Any = 3
    assert not_a_name not in frozen
    with pytest.raises(MultipleValuesError):
        frozen["x-token"]
    with pytest.raises(KeyError):
        frozen["nope"]
    with pytest.raises(MultipleValuesError):  # as plain's: x-token has two values
        dict(frozen.items())
    assert repr(frozen) == f"FrozenHeaders({ITEMS!r})"
    assert FrozenHeaders(Headers()) == Headers() and len(FrozenHeaders(Headers())) == 0


def test_frozen_headers_are_read_only_and_copy_to_headers() -> None:
    frozen = FrozenHeaders(Headers(ITEMS))
    changes: List[Callable[[], Any]] = [
        lambda: frozen.__setitem__("a", "b"),
        lambda: frozen.__delitem__("host"),
        frozen.clear,
        lambda: frozen.update({"a": "b"}),
        lambda: frozen.setdefault("a", "b"),
        lambda: frozen.pop("host"),
        lambda: frozen.set_insecure("a", "b"),
    ]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert list(frozen.raw_items()) == ITEMS
    copy = frozen.copy()
    assert type(copy) is Headers and copy == frozen
    copy["New"] = "1"
    assert "new" in copy and "new" not in frozen


def test_a_handshake_request_copies_and_pickles_with_its_headers() -> None:
    request = HandshakeRequest("/ws/a", {"room": "a"}, FrozenHeaders(Headers(ITEMS)), {"t": "1"}, "t=1", "1.2.3.4:5")
    for copied in (copy.copy(request), copy.deepcopy(request), pickle.loads(pickle.dumps(request))):
        assert copied == request and type(copied.headers) is FrozenHeaders
        assert list(copied.headers.raw_items()) == ITEMS
    assert dataclasses.replace(request, path="/ws/b").path == "/ws/b"


# ------------------------------------------------------------------ parked readers
USER: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="nobody")


class Methods(RpcMethodsBase):
    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.seen: List[str] = []
        self.disconnected = 0

    async def who(self) -> str:
        return USER.get()

    async def note(self, i: int) -> None:
        await self.gate.wait()
        self.seen.append(USER.get())


class ClientMethods(RpcMethodsBase):
    async def hello(self) -> str:
        return "from the client"


@contextlib.asynccontextmanager
async def serving(server: WebSocketRpcServer) -> AsyncIterator[str]:
    async with server.listen("127.0.0.1", 0):
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


def idle(server: WebSocketRpcServer, n: int) -> Callable[[], bool]:
    """Every one of ``n`` connections open and served, and no task kept for any of them."""
    return lambda: len(server.channels) == n and not server._tasks


async def test_idle_native_connections_keep_no_task_and_still_call_both_ways(speedups: Any) -> None:
    methods = Methods()
    server = WebSocketRpcServer(methods, speedups=speedups)
    async with serving(server) as url:
        clients = [WebSocketRpcClient(url, ClientMethods()) for _ in range(20)]
        for client in clients:
            await client.__aenter__()
        try:
            await eventually(idle(server, 20))
            tasks = len(asyncio.all_tasks())
            for client in clients:  # each wakes nothing: the call is read and answered from the socket's callback
                assert (await client.other.who()).result == "nobody"
            answers = await asyncio.gather(*(channel.other.hello() for channel in server.channels))
            assert [a.result for a in answers] == ["from the client"] * 20
            await eventually(idle(server, 20))
            # A channel that ran calls keeps a task waiting for the next ones, until a watchdog's tick
            # passes with nothing received (two turns here: the first takes the counters as they are).
            channels = [*server.channels, *(client.channel for client in clients)]
            for _ in range(2):
                for channel in channels:
                    assert channel is not None and channel._watchdog is not None
                    channel._watchdog.on_turn()
            await eventually(lambda: len(asyncio.all_tasks()) <= tasks)
            assert (await clients[0].other.who()).result == "nobody"  # and the next call makes one again
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)
        await eventually(lambda: not server.channels and not server._tasks)


async def test_a_parked_reader_reads_on_in_the_context_authenticate_set(speedups: Any) -> None:
    """Past the queue, the reader stops: the socket queues, wakes a task, which waits for room, then reads on."""

    async def authenticate(request: HandshakeRequest) -> None:
        USER.set("alice")

    methods = Methods()
    server = WebSocketRpcServer(
        methods, speedups=speedups, authenticate=authenticate, max_pending_requests=2, max_queued_requests=2
    )
    async with serving(server) as url:
        async with WebSocketRpcClient(url) as client:
            await eventually(idle(server, 1))
            assert (await client.other.who()).result == "alice"  # pushed: the reader's context
            for i in range(40):  # 2 run, 2 queue, the rest overflow: reading stops, the socket queues
                await client.notify("note", {"i": i})
            (channel,) = server.channels
            await eventually(lambda: channel.reading_paused)
            assert server._tasks  # a task reads on for the parked reader
            methods.gate.set()
            await eventually(lambda: len(methods.seen) == 40)
            assert methods.seen == ["alice"] * 40
            await eventually(idle(server, 1))  # parked again
            assert (await client.other.who()).result == "alice"


async def test_a_parked_connection_ends_once_either_way(speedups: Any) -> None:
    gone: List[str] = []

    async def on_disconnect(channel: Any) -> None:
        gone.append(channel.id)

    server = WebSocketRpcServer(Methods(), speedups=speedups, on_disconnect=[on_disconnect])
    async with serving(server) as url:
        async with WebSocketRpcClient(url):
            await eventually(idle(server, 1))
            (first,) = server.channels
            assert server.cluster.local_clients() == [first.id]
        await eventually(lambda: gone == [first.id] and not server.channels and not server._tasks)
        assert first.is_closed() and server.cluster.local_clients() == []

        async with WebSocketRpcClient(url) as client:
            await eventually(idle(server, 1))
            (second,) = server.channels
            await second.close(1000, "bye")  # our side ends it, parked
            await eventually(lambda: gone == [first.id, second.id] and not server.channels and not server._tasks)
            assert server.cluster.local_clients() == []
            await eventually(lambda: client.channel is None or client.channel.is_closed())


# ------------------------------------------------------------------ the heap
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"User-Agent: fastwsrpc-tests\r\n\r\n"
)
#: What the Python heap of an idle native connection may hold of ours (allocations made on a line of fastwsrpc's
#: or websockets': the event loop's transport, for one, is not ours): about 5 kB on CPython 3.11, 11 kB before
#: the work of docs/guide/scale.md; the margin is for other Pythons' object layouts.
BOUND = 6_500


async def open_raw(port: int, n: int) -> List[Tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``n`` upgraded connections that will say nothing more (no client library in this process's heap)."""
    held = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HANDSHAKE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        held.append((reader, writer))
    return held


def ours(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated on a line of fastwsrpc's or websockets' (one frame is traced: the line that allocated)."""
    package = os.path.dirname(fastwsrpc.__file__)
    kept = snapshot.filter_traces(
        [tracemalloc.Filter(True, os.path.join(package, "*")), tracemalloc.Filter(True, "*/websockets/*")]
    )
    return sum(stat.size for stat in kept.statistics("filename"))


async def heap_per_connection(speedups: Any, steps: Tuple[int, ...]) -> List[float]:
    """The heap of ours each step of new idle connections grew by, per connection."""
    server = WebSocketRpcServer(Methods(), speedups=speedups, ping_interval=600)  # no ping within the test
    held: List[Tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    per: List[float] = []
    async with server.listen("127.0.0.1", 0):
        port = server.sockets[0].getsockname()[1]
        held += await open_raw(port, 20)  # what the first connections make once (wheels, caches)
        await eventually(idle(server, len(held)))
        tracemalloc.start(1)
        try:
            gc.collect()
            before = ours(tracemalloc.take_snapshot())
            for step in steps:
                held += await open_raw(port, step)
                await eventually(idle(server, len(held)), timeout=30)
                gc.collect()
                after = ours(tracemalloc.take_snapshot())
                per.append((after - before) / step)
                before = after
        finally:
            tracemalloc.stop()
            for _, writer in held:
                writer.close()
    return per


async def test_an_idle_native_connection_holds_the_same_few_kilobytes_at_100_and_300(speedups: Any) -> None:
    first, then = await heap_per_connection(speedups, (100, 200))  # 100 connections, then 200 more
    assert first < BOUND and then < BOUND, (first, then)
    # Nothing an idle connection holds grows with their number (the rest: sets and dicts of all of them resizing).
    assert abs(first - then) < 0.1 * first, (first, then)
