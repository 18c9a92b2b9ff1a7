"""Every setting does what its name says (issue 10): one test per field, on memory pairs.

The watchdog's timeouts are real clock timeouts; the tests set them small and
wait for the channel to close (an event), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any, List

import pytest

from fastwsrpc import (
    RpcBackpressureConfig,
    RpcChannel,
    RpcConnectionConfig,
    RpcMethodsBase,
    RpcSettings,
    WebSocketConnectionConfig,
    WebSocketRpcClient,
    WebSocketRpcEndpoint,
)
from fastwsrpc.testing import channel_pair, memory_pair, until


class Methods(RpcMethodsBase):
    async def pad(self, i: int = 0) -> str:
        return "x" * 256

    async def add(self, a: int, b: int) -> int:
        return a + b


async def closed(channel: RpcChannel) -> str:
    await asyncio.wait_for(channel.wait_until_closed(), 30)
    return channel.close_reason


async def test_idle_timeout_closes_a_connection_nobody_uses(speedups: Any) -> None:
    async with channel_pair(Methods(), RpcMethodsBase(), speedups=speedups, idle_timeout=0.05) as (server, client):
        assert (await client.other.add(a=1, b=1)).result == 2  # traffic keeps it open meanwhile
        assert "idle timeout" in await closed(server)
        assert server.socket.close_code == 1001  # type: ignore[attr-defined]


async def test_a_call_in_flight_is_not_idleness(speedups: Any) -> None:
    gate = asyncio.Event()

    class Slow(RpcMethodsBase):
        async def wait(self) -> str:
            await gate.wait()
            return "done"

    async with channel_pair(Slow(), RpcMethodsBase(), speedups=speedups, idle_timeout=0.05) as (server, client):
        call = asyncio.ensure_future(client.other.wait())
        await until(lambda: server.running_count == 1)
        # Many idle periods pass while the call runs: wait for the client's own watchdog ticks.
        for _ in range(3):
            await asyncio.wait_for(_ticks(server, 2), 30)
        assert not server.is_closed()
        gate.set()
        assert (await call).result == "done"


async def _ticks(channel: RpcChannel, n: int) -> None:
    """Wait until the channel's watchdog has ticked ``n`` more times (an event per tick)."""
    watchdog = channel._watchdog
    assert watchdog is not None
    watchdog.tick_event = event = asyncio.Event()
    for _ in range(n):
        event.clear()
        await event.wait()
    watchdog.tick_event = None


async def test_message_receive_timeout_closes_a_slow_sender(speedups: Any) -> None:
    a, _b = memory_pair()
    server = RpcChannel(Methods(), a, settings=RpcSettings(message_receive_timeout=0.05), speedups=speedups)
    reader = asyncio.ensure_future(server.run())
    a.receiving_partial = True  # a message started and never finished (slowloris)
    assert "message receive timeout" in await closed(server)
    assert a.close_code == 1008
    await reader


async def test_message_receive_timeout_ignores_a_peer_we_chose_not_to_read(speedups: Any) -> None:
    # Notifications overflowed the queue, so the channel stops reading: a
    # half-read frame then is our doing, not the peer's, and must not close the
    # connection.
    gate = asyncio.Event()

    class Held(RpcMethodsBase):
        async def wait(self) -> None:
            await gate.wait()

    a, b = memory_pair()
    settings = RpcSettings(message_receive_timeout=0.05, max_pending_requests=1, max_queued_requests=0)
    server = RpcChannel(Held(), a, settings=settings, speedups=speedups)
    reader = asyncio.ensure_future(server.run())
    await b.send(json.dumps({"jsonrpc": "2.0", "method": "wait"}))
    await b.send(json.dumps({"jsonrpc": "2.0", "method": "wait"}))
    await until(lambda: server.reading_paused)
    a.receiving_partial = True
    await asyncio.wait_for(_ticks(server, 4), 30)
    assert not server.is_closed()
    gate.set()
    await server.close()
    await reader


async def test_send_timeout_drops_a_peer_that_reads_nothing(speedups: Any, caplog: Any) -> None:
    a, b = memory_pair(maxsize=4)
    server = RpcChannel(Methods(), a, settings=RpcSettings(send_timeout=0.05), speedups=speedups)
    reader = asyncio.ensure_future(server.run())
    for i in range(8):  # the answers of these fill the peer's queue; nobody reads them
        await b.send(json.dumps({"jsonrpc": "2.0", "method": "pad", "id": i}))
    assert "send timeout" in await closed(server)
    assert a.aborted  # no closing handshake: it could not get through either
    assert any("memory:a" in r.getMessage() and "read nothing" in r.getMessage() for r in caplog.records)
    await reader


async def test_a_slow_reader_is_not_a_stalled_one(speedups: Any) -> None:
    async with channel_pair(Methods(), RpcMethodsBase(), speedups=speedups, maxsize=2, send_timeout=0.05) as (
        server,
        client,
    ):
        results = await asyncio.gather(*(client.other.pad(i=i) for i in range(200)))
        assert len(results) == 200 and not server.is_closed()


async def test_max_send_queue_size_bounds_answers_waiting_for_the_socket(speedups: Any) -> None:
    a, b = memory_pair(maxsize=4)
    settings = RpcSettings(max_send_queue_size=3, max_pending_requests=4, send_timeout=None)
    server = RpcChannel(Methods(), a, settings=settings, speedups=speedups)
    reader = asyncio.ensure_future(server.run())

    async def flood() -> None:
        for i in range(1_000):
            await b.send(json.dumps({"jsonrpc": "2.0", "method": "pad", "id": i}))

    sender = asyncio.ensure_future(flood())
    await until(lambda: server.reading_paused and server.sending_count >= 3 and b.unread == 4)
    # Reading stopped once 3 answers waited (handlers already started may add
    # theirs: at most max_pending_requests more), so the flood is pushed back.
    assert 3 <= server.sending_count <= 3 + server.max_pending_requests
    # Frames read: the 4 answers the pipe holds, those waiting to be sent, and the running ones.
    assert server._state.received <= 4 + server.sending_count + server.running_count + server.queued_count
    assert not sender.done()
    answers: List[Any] = [json.loads(await b.receive()) for _ in range(1_000)]
    await sender
    assert len(answers) == 1_000
    await server.close()
    await reader


def test_compression_threshold_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match="compression_threshold"):
        WebSocketConnectionConfig(compression_threshold=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WebSocketConnectionConfig()  # not set: no warning


def test_unknown_keywords_are_refused_everywhere() -> None:
    with pytest.raises(TypeError, match="max_pendng_requests"):
        RpcSettings.resolve(owner="X", max_pendng_requests=3)
    with pytest.raises(TypeError, match="max_pendng_requests"):
        WebSocketRpcClient("ws://127.0.0.1:1/ws", max_pendng_requests=3)
    with pytest.raises(TypeError):
        WebSocketRpcEndpoint(max_pendng_requests=3)  # type: ignore[call-arg]


async def test_unknown_channel_keyword_is_refused(speedups: Any) -> None:
    a, _ = memory_pair()
    with pytest.raises(TypeError, match="RpcChannel"):
        RpcChannel(None, a, max_pendng_requests=3)


def test_settings_resolve_once_from_configs_and_keywords() -> None:
    settings = RpcSettings.resolve(
        connection=RpcConnectionConfig(idle_timeout=30, send_timeout=5),
        backpressure=RpcBackpressureConfig(max_pending_requests=7, max_batch_size=9),
        max_pending_requests=8,
    )
    assert (settings.idle_timeout, settings.send_timeout) == (30, 5)
    assert (settings.max_pending_requests, settings.max_batch_size) == (8, 9)
    endpoint = WebSocketRpcEndpoint(max_pending_requests=3, idle_timeout=4.0, max_depth=10)
    assert endpoint.settings.max_pending_requests == 3 and endpoint.settings.max_depth == 10
    assert endpoint.max_pending_requests == 3
    client = WebSocketRpcClient("ws://127.0.0.1:1/ws", max_pending_requests=11)
    assert client.settings.max_pending_requests == 11
    with pytest.raises(ValueError):
        RpcSettings(max_batch_size=0)
