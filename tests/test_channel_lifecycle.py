"""A channel's life on a memory pair: callbacks, closing (either side, cleanly or not), what fails and what runs once.

The endpoint and the client only wire these hooks to a socket; what they do is
the channel's, so it is tested here without a network, on both twins of the
hot path (every test takes ``speedups``). The socket side (the endpoint's and
the client's ``on_connect``/``on_disconnect`` keywords, a server going away)
keeps one end-to-end test each in ``test_e2e_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, List, Tuple, cast

import pytest

from fastwsrpc import (
    LoggingModes,
    RpcChannel,
    RpcChannelClosedError,
    RpcInternalError,
    RpcNotConnectedError,
    RpcSettings,
    logging_config,
)
from fastwsrpc.testing import MemoryTransport, channel_pair, memory_pair, until

from .app import Observed, ObservedClient, ObservedServer
from .support import methods, settled


class Greeter(ObservedClient):
    def __init__(self) -> None:
        super().__init__()
        self.greetings: List[str] = []

    async def greet(self, name: str) -> str:
        self.greetings.append(name)
        return f"hello {name}"


class Calls:
    """Records callback calls: ``(event, channel id, error)``."""

    def __init__(self) -> None:
        self.log: List[Tuple[str, str, Any]] = []

    async def connected(self, channel: RpcChannel) -> None:
        self.log.append(("connect", channel.id, None))

    async def disconnected(self, channel: RpcChannel) -> None:
        self.log.append(("disconnect", channel.id, None))

    async def errored(self, channel: RpcChannel, error: Exception) -> None:
        self.log.append(("error", channel.id, error))

    def events(self, channel: RpcChannel) -> List[str]:
        return [event for event, cid, _ in self.log if cid == channel.id]


# ---------------------------------------------------------------- closing


async def test_closing_fails_pending_calls_and_stops_handlers_on_both_sides(speedups: Any) -> None:
    """A close ends every call both ways at once: callers get RpcChannelClosedError, handlers CancelledError."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        ours = asyncio.ensure_future(client.call("hang", {"key": "to-server"}))
        theirs = asyncio.ensure_future(server.call("hang", {"key": "to-client"}))
        await until(lambda: methods(server).started == ["to-server"] and methods(client).started == ["to-client"])
        await client.close()
        for call in (ours, theirs):
            with pytest.raises(RpcChannelClosedError):
                await call
        await until(lambda: server.is_closed())
        assert methods(server).cancelled == ["to-server"] and methods(client).cancelled == ["to-client"]
        await settled(server, client)
        assert not client._runner.tasks and not server._runner.by_id
        assert client.close_reason == "closed locally" and server.close_reason
        assert await client.wait_until_closed() and await server.wait_until_closed()


async def test_a_dropped_connection_fails_pending_calls(speedups: Any) -> None:
    """No closing handshake (the peer died): pending calls still fail at once, and later calls are refused."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        calls = [asyncio.ensure_future(client.call("hang", {"key": str(i)})) for i in range(5)]
        await until(lambda: len(methods(server).started) == 5)
        cast(MemoryTransport, server.socket).abort()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RpcChannelClosedError) for r in results), results
        assert client.pending_count == 0 and client.is_closed()
        with pytest.raises(RpcChannelClosedError):
            await client.other.add(a=1, b=2)


async def test_a_closed_peer_fails_calls_of_ours_sent_after_its_close(speedups: Any) -> None:
    """The server closed first: our call is not left to wait forever for an answer that cannot come."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        await server.close()
        await until(lambda: client.is_closed())
        with pytest.raises(RpcNotConnectedError):
            await client.other.add(a=1, b=2)


async def test_on_disconnect_closes_the_channel(speedups: Any) -> None:
    """``on_disconnect()`` (what an adapter calls when its socket went away) fails what waits and fires the hooks."""
    calls = Calls()
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        client.add_disconnect_callback(calls.disconnected)
        pending = asyncio.ensure_future(client.call("hang", {"key": "x"}))
        await until(lambda: methods(server).started == ["x"])
        await client.on_disconnect()
        with pytest.raises(RpcChannelClosedError):
            await pending
        assert client.is_closed() and client.close_reason == "disconnected"
        assert calls.events(client) == ["disconnect"]


# ---------------------------------------------------------------- callbacks


async def test_disconnect_callbacks_run_once_however_the_channel_ends(speedups: Any) -> None:
    """close() twice, on_disconnect(), the reader ending: each side's disconnect hooks still run exactly once."""
    calls = Calls()
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        for channel in (server, client):
            channel.add_disconnect_callback(calls.disconnected)
        await client.close()
        await client.close()
        await client.on_disconnect()
        await until(lambda: calls.events(server) == ["disconnect"])
        await server.close()
        assert calls.events(client) == ["disconnect"]
    assert calls.events(server) == ["disconnect"] and calls.events(client) == ["disconnect"]


async def test_connect_callbacks_may_call_the_other_side(speedups: Any) -> None:
    """Connect hooks run in tasks of their own, so one that calls the peer gets its answer from the running reader."""
    seen: List[Any] = []

    async def greet_the_client(channel: RpcChannel) -> None:
        seen.append((await channel.other.greet(name="from-server")).result)

    async with channel_pair(ObservedServer(), Greeter(), speedups=speedups) as (server, client):
        server.add_connect_callback(greet_the_client)
        await server.on_connect()
        await until(lambda: seen == ["hello from-server"])
        assert cast(Greeter, client.methods).greetings == ["from-server"]
        await settled(server, client)


async def test_callbacks_given_to_the_constructor_run_as_the_channel_lives(speedups: Any) -> None:
    """``connect_callbacks``/``disconnect_callbacks``/``error_callbacks``: each at its moment, with the channel."""
    calls = Calls()
    a, b = memory_pair()
    server = RpcChannel(
        ObservedServer(),
        a,
        connect_callbacks=[calls.connected],
        disconnect_callbacks=[calls.disconnected],
        error_callbacks=[calls.errored],
        speedups=speedups,
    )
    client = RpcChannel(ObservedClient(), b, speedups=speedups)
    readers = [asyncio.ensure_future(server.run()), asyncio.ensure_future(client.run())]
    await server.on_connect()
    await until(lambda: calls.events(server) == ["connect"])
    with pytest.raises(RpcInternalError):
        await client.other.fail()
    await until(lambda: calls.events(server) == ["connect", "error"])
    assert isinstance(calls.log[-1][2], ValueError)
    await client.close()
    await asyncio.gather(*readers)
    assert calls.events(server) == ["connect", "error", "disconnect"]


async def test_error_callbacks_see_internal_errors_only(speedups: Any) -> None:
    """A handler's crash is reported to the error hooks; an error the method chose to answer is not a crash."""
    calls = Calls()
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        server.add_error_callback(calls.errored)
        with pytest.raises(RpcInternalError):
            await client.other.fail()
        await until(lambda: calls.events(server) == ["error"])
        error = calls.log[0][2]
        assert isinstance(error, ValueError) and str(error) == "secret detail"
        with pytest.raises(Exception, match="nope"):
            await client.other.fail_with_code(code=-32050, message="nope")
        await client.notify("fail")  # a notification that crashes is a crash too, though nobody is told
        await until(lambda: calls.events(server) == ["error", "error"])
        await settled(server, client)


async def test_a_failing_callback_is_logged_and_the_connection_lives_on(speedups: Any, caplog: Any) -> None:
    """A hook is the application's code: its failure must not take the connection (or the other hooks) down."""
    calls = Calls()

    async def broken(channel: RpcChannel, *error: Any) -> None:
        raise RuntimeError("broken hook")

    caplog.set_level(logging.ERROR, logger="fastwsrpc")
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        server.add_connect_callback(broken)
        server.add_error_callback(broken)
        server.add_error_callback(calls.errored)
        server.add_disconnect_callback(broken)
        server.add_disconnect_callback(calls.disconnected)
        await server.on_connect()
        await until(lambda: any("broken hook" in str(r.exc_info[1]) for r in caplog.records if r.exc_info))
        with pytest.raises(RpcInternalError):
            await client.other.fail()
        await until(lambda: calls.events(server) == ["error"])
        assert (await client.other.add(a=1, b=2)).result == 3
        await client.close()
        await until(lambda: calls.events(server) == ["error", "disconnect"])


async def test_callbacks_can_be_removed(speedups: Any) -> None:
    """``remove_*_callback`` says whether the hook was there; a removed hook does not run."""
    calls = Calls()
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        server.add_connect_callback(calls.connected)
        server.add_disconnect_callback(calls.disconnected)
        server.add_error_callback(calls.errored)
        assert server.remove_connect_callback(calls.connected) and not server.remove_connect_callback(calls.connected)
        assert server.remove_disconnect_callback(calls.disconnected)
        assert not server.remove_disconnect_callback(calls.disconnected)
        assert server.remove_error_callback(calls.errored) and not server.remove_error_callback(calls.errored)
        await server.on_connect()
        with pytest.raises(RpcInternalError):
            await client.other.fail()
        await server.close()
        await settled(server, client)
    assert calls.log == []


# ---------------------------------------------------------------- settings


async def test_unknown_settings_are_a_type_error(speedups: Any) -> None:
    """A misspelt limit must fail loudly, not be accepted and ignored."""
    a, _ = memory_pair()
    with pytest.raises(TypeError, match="max_pending_request"):
        RpcChannel(Observed(), a, max_pending_request=3, speedups=speedups)
    channel = RpcChannel(Observed(), a, settings=RpcSettings(max_pending_requests=3), speedups=speedups)
    assert channel.max_pending_requests == 3
    await channel.close()


def test_logging_modes() -> None:
    """fastapi-ws-rpc's logging modes route the library's logs: nowhere, uvicorn-style, or plain propagation."""
    logging_config.set_mode(LoggingModes.NO_LOGS)
    assert logging.getLogger("fastwsrpc").level > logging.CRITICAL
    logging_config.set_mode(LoggingModes.UVICORN)
    root = logging.getLogger("fastwsrpc")
    assert any(getattr(h, "_fastwsrpc", False) for h in root.handlers)
    logging_config.set_mode(LoggingModes.SIMPLE)
    assert root.propagate and not any(getattr(h, "_fastwsrpc", False) for h in root.handlers)
    assert logging_config.get_mode() is LoggingModes.SIMPLE
