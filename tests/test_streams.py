"""Streams (issue 13): async generators across the wire with credits, on memory pairs, both twins."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any, AsyncIterator, Dict, List

import msgspec
import pytest

from fastwsrpc import RemoteValueError, RpcChannelClosedError, RpcInternalError, RpcMethodsBase, RpcTimeoutError
from fastwsrpc.errors import RpcInvalidParamsError, RpcUsageError
from fastwsrpc.testing import channel_pair, until


class Tick(msgspec.Struct):
    i: int


class Feed(RpcMethodsBase):
    """Producers that report how far they got and whether their ``finally`` ran."""

    def __init__(self) -> None:
        super().__init__()
        self.made: List[int] = []  # shared with the per-connection copy
        self.closed: List[str] = []
        self.gate = asyncio.Event()

    async def ticks(self, n: int, start: int = 0) -> AsyncIterator[Dict[str, int]]:
        try:
            for i in range(start, start + n):
                self.made.append(i)
                yield {"i": i}
        finally:
            self.closed.append("ticks")

    async def forever(self) -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                self.made.append(i)
                yield i
                i += 1
        finally:
            self.closed.append("forever")

    async def failing(self, after: int) -> AsyncIterator[int]:
        for i in range(after):
            yield i
        raise RemoteValueError("out of ticks", code=-32050, data={"after": after})

    async def crashing(self) -> AsyncIterator[int]:
        yield 1
        raise ValueError("secret")

    async def slow(self) -> AsyncIterator[int]:
        yield 1
        await self.gate.wait()
        yield 2

    async def add(self, a: int, b: int) -> int:
        return a + b


async def test_a_stream_both_ways_with_typed_items(speedups: Any) -> None:
    async with channel_pair(Feed(), Feed(), speedups=speedups) as (server, client):
        assert [x async for x in client.other.ticks.stream(n=40)] == [{"i": i} for i in range(40)]
        async with server.stream("ticks", {"n": 3, "start": 5}, result_type=Tick) as items:
            assert [x async for x in items] == [Tick(5), Tick(6), Tick(7)]
        assert [x async for x in client.stream("ticks", [2])] == [{"i": 0}, {"i": 1}]  # positional
        assert server.stream_count == client.stream_count == 0


async def test_breaking_out_stops_the_producer_at_once(speedups: Any) -> None:
    feed = Feed()
    async with channel_pair(feed, RpcMethodsBase(), speedups=speedups) as (server, client):
        async for x in client.other.forever.stream(buffer=4):
            if x == 10:
                break
        gc.collect()  # a bare ``async for`` that breaks: the generator is finalised, which cancels
        await until(lambda: feed.closed == ["forever"] and server.stream_count == 0 and client.stream_count == 0)
        # The producer ran at most a window ahead of what was consumed.
        assert len(feed.made) <= 11 + 4 + 1
        async with client.stream("forever", buffer=2) as items:
            assert await items.next() == 0
        await until(lambda: feed.closed == ["forever", "forever"] and server.stream_count == 0)


async def test_a_stalled_consumer_stops_the_producer(speedups: Any) -> None:
    feed = Feed()
    async with channel_pair(feed, RpcMethodsBase(), speedups=speedups) as (server, client):
        async with client.stream("forever", buffer=8) as items:
            assert await items.next() == 0
            # We read no further: the producer stops after the window (or the 16
            # initial credits, when it ran before our window arrived: eager tasks).
            await until(lambda: len(feed.made) >= 8)
            for _ in range(1000):
                await asyncio.sleep(0)
            made = len(feed.made)
            assert made in (8, 16) and len(items._items) <= 16
            for _ in range(1000):
                await asyncio.sleep(0)
            assert len(feed.made) == made
            # Reading resumes the producer.
            assert [await items.next() for _ in range(20)] == list(range(1, 21))
        await until(lambda: server.stream_count == 0 and client.stream_count == 0)


async def test_a_producer_error_is_raised_as_a_call_would(speedups: Any) -> None:
    async with channel_pair(Feed(), RpcMethodsBase(), speedups=speedups) as (server, client):
        got: List[int] = []
        with pytest.raises(RemoteValueError) as raised:
            async for x in client.other.failing.stream(after=3):
                got.append(x)
        assert got == [0, 1, 2] and raised.value.code == -32050 and raised.value.data == {"after": 3}
        with pytest.raises(RpcInternalError) as internal:
            async for _ in client.other.crashing.stream():
                pass
        assert "secret" not in str(internal.value)
        with pytest.raises(RpcInvalidParamsError):  # typed params are checked before the stream starts
            async for _ in client.other.ticks.stream(n="many"):
                pass
        assert server.stream_count == client.stream_count == 0


async def test_the_connection_ending_mid_stream_ends_both_sides(speedups: Any) -> None:
    feed = Feed()
    async with channel_pair(feed, RpcMethodsBase(), speedups=speedups) as (server, client):
        items = client.stream("forever")
        await items.open()
        assert await items.next() == 0
        await server.close()
        with pytest.raises(RpcChannelClosedError):
            while True:
                await items.next()
        await until(lambda: feed.closed == ["forever"])
        assert server.stream_count == client.stream_count == 0


async def test_a_timeout_between_items(speedups: Any) -> None:
    feed = Feed()
    async with channel_pair(feed, RpcMethodsBase(), speedups=speedups) as (server, client):
        seen: List[int] = []
        with pytest.raises(RpcTimeoutError):
            async for x in client.other.slow.stream(timeout=0.05):
                seen.append(x)
        assert seen == [1]
        await until(lambda: server.stream_count == 0 and client.stream_count == 0)


async def test_a_thousand_concurrent_streams_on_one_connection(speedups: Any) -> None:
    async with channel_pair(Feed(), RpcMethodsBase(), speedups=speedups, max_pending_requests=2000) as (
        server,
        client,
    ):

        async def one(k: int) -> List[Any]:
            return [x["i"] async for x in client.other.ticks.stream(n=5, start=k)]

        results = await asyncio.gather(*(one(k) for k in range(1000)))
        assert results == [list(range(k, k + 5)) for k in range(1000)]
        assert server.stream_count == client.stream_count == 0 and server.running_count == 0


async def test_streams_are_misused_with_clear_errors(speedups: Any) -> None:
    async with channel_pair(Feed(), RpcMethodsBase(), speedups=speedups) as (server, client):
        with pytest.raises(RpcUsageError, match="not a stream"):
            async for _ in client.other.add.stream(a=1, b=2):
                pass
        # A stream method in a batch cannot be answered: -32600 for that item.
        (answer,) = await client.call_batch([("ticks", {"n": 1})])
        assert answer.error is not None and answer.error.code == -32600
        # Called as a plain call, it answers its stream id; its items find no consumer and stop it.
        assert "stream" in (await client.call("forever")).result
        await until(lambda: server.stream_count == 0)


async def test_a_stream_over_a_plain_json_rpc_wire(speedups: Any) -> None:
    """What another language's JSON-RPC client does, frame by frame (documented in the README)."""
    from fastwsrpc import RpcChannel, RpcSettings
    from fastwsrpc.testing import memory_pair

    a, b = memory_pair()
    server = RpcChannel(Feed(), a, settings=RpcSettings(), speedups=speedups)
    reader = asyncio.ensure_future(server.run())
    await b.send(json.dumps({"jsonrpc": "2.0", "method": "ticks", "params": {"n": 5}, "id": "s1"}))
    await b.send(json.dumps({"jsonrpc": "2.0", "method": "$/stream.credit", "params": {"stream": "s1", "window": 2}}))
    frames = [json.loads(await b.receive()) for _ in range(3)]
    assert frames[0] == {"jsonrpc": "2.0", "id": "s1", "result": {"stream": "s1"}}
    assert [f["params"] for f in frames[1:]] == [{"stream": "s1", "item": {"i": 0}}, {"stream": "s1", "item": {"i": 1}}]
    assert all(f["method"] == "$/stream.item" for f in frames[1:])
    await b.send(json.dumps({"jsonrpc": "2.0", "method": "$/stream.credit", "params": {"stream": "s1", "credits": 10}}))
    rest = [json.loads(await b.receive()) for _ in range(4)]
    assert [f["params"].get("item") for f in rest[:3]] == [{"i": 2}, {"i": 3}, {"i": 4}]
    assert rest[3] == {"jsonrpc": "2.0", "method": "$/stream.end", "params": {"stream": "s1"}}
    await server.close()
    await reader
