"""Limits, backpressure, duration, keepalive, reconnect and TLS, each over a real connection."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
from typing import Any, Dict

import pytest
from websockets.asyncio.client import connect

from fastwsrpc import (
    RpcBackpressureError,
    RpcChannelClosedError,
    RpcConnectionError,
    RpcKeepaliveConfig,
    RpcMethodsBase,
    RpcRetryConfig,
    WebSocketRpcClient,
    WebSocketRpcClientConfig,
)

from .support import TcpProxy, eventually, start_server

FAST_RETRY = RpcRetryConfig(max_attempts=50, min_wait=0.02, max_wait=0.1)
#: Reconnect at once, and keep trying while a killed server restarts.
FAST_RECONNECT: Dict[str, Any] = {"reconnect_delay": 0.01, "max_reconnect_attempts": 200}


async def test_client_message_size_limit_closes_with_1009(server: Any) -> None:
    async with WebSocketRpcClient(server.url(), RpcMethodsBase(), max_message_size=4096) as client:
        slow = asyncio.ensure_future(client.other.sleep(seconds=30))
        with pytest.raises(RpcChannelClosedError, match="1009"):
            await client.other.big(size=10_000)
        # the other pending call failed at once too, with the same clear reason
        with pytest.raises(RpcChannelClosedError, match="1009"):
            await slow


async def test_sender_of_an_oversized_frame_gets_a_clear_error(server: Any) -> None:
    async with WebSocketRpcClient(server.url("/small"), RpcMethodsBase()) as client:
        pending = asyncio.ensure_future(client.other.sleep(seconds=30))
        await eventually(lambda: client.pending_count == 1)
        with pytest.raises(RpcChannelClosedError, match="1009"):
            await client.other.echo(text="x" * 5000)
        with pytest.raises(RpcChannelClosedError, match="1009"):
            await pending
    async with WebSocketRpcClient(server.url("/small"), RpcMethodsBase()) as client:
        assert (await client.other.echo(text="still serving")).result == "still serving"


async def test_outgoing_backpressure_raises_past_the_local_queue(server: Any) -> None:
    async with WebSocketRpcClient(server.url(), RpcMethodsBase(), max_pending_requests=3, max_queued_calls=1) as client:
        slow = [asyncio.ensure_future(client.other.sleep(seconds=0.5)) for _ in range(3)]
        await eventually(lambda: client.pending_count == 3)
        # Past our own limit of 3 in flight, one call waits locally; the next one is refused at once.
        waiting = asyncio.ensure_future(client.other.add(a=2, b=2))
        await eventually(lambda: client.channel is not None and len(client.channel._calls.waiters or ()) == 1)
        with pytest.raises(RpcBackpressureError, match="max_queued_calls"):
            await client.other.add(a=1, b=1)
        assert await asyncio.gather(*slow) and (await waiting).result == 4
        assert client.pending_count == 0
        assert (await client.other.add(a=1, b=1)).result == 2


async def test_a_call_waiting_locally_past_its_timeout_is_refused(server: Any) -> None:
    async with WebSocketRpcClient(server.url(), RpcMethodsBase(), max_pending_requests=1) as client:
        slow = asyncio.ensure_future(client.other.sleep(seconds=0.5))
        await eventually(lambda: client.pending_count == 1)
        with pytest.raises(RpcBackpressureError, match=r"within 0\.01 s"):
            await client.call("add", {"a": 1, "b": 1}, timeout=0.01)
        await slow
        assert (await client.other.add(a=1, b=1)).result == 2


async def test_calls_past_the_limit_wait_their_turn_instead_of_being_refused(server: Any) -> None:
    # /limited allows 2 calls in flight: the third is not read until one ends
    # (TCP pushes back), then answered; a pipelining client sees no refusal.
    async with connect(server.url("/limited")) as ws:
        for i in range(3):
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "sleep", "params": [0.2], "id": i}))
        answers = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
        assert sorted(answer["id"] for answer in answers) == [0, 1, 2]
        assert all("result" in answer for answer in answers)
    async with WebSocketRpcClient(server.url("/limited"), RpcMethodsBase()) as client:
        calls = await asyncio.gather(*(client.other.sleep(seconds=0.1) for _ in range(5)), return_exceptions=True)
        assert not any(isinstance(c, BaseException) for c in calls)


async def test_connection_duration_limit_and_reconnect(server: Any) -> None:
    client = WebSocketRpcClient(
        server.url("/short"), RpcMethodsBase(), auto_reconnect=True, retry_config=FAST_RETRY, **FAST_RECONNECT
    )
    async with client:
        first = client.channel
        assert first is not None
        await eventually(lambda: client.reconnects >= 1 and client.is_connected, timeout=10)
        assert first.is_closed() and "max connection duration" in first.close_reason
        assert client.channel is not first
        assert (await client.other.add(a=1, b=2)).result == 3


async def test_keepalive_failure_closes_and_reconnects(server_kind: str) -> None:
    with start_server(server_kind) as srv:
        proxy = await TcpProxy(srv.port).start()
        config = WebSocketRpcClientConfig(
            keepalive=RpcKeepaliveConfig(interval=0.1, max_failures=2, use_protocol_ping=False)
        )
        client = WebSocketRpcClient(
            proxy.url(), RpcMethodsBase(), config=config, auto_reconnect=True, retry_config=FAST_RETRY, **FAST_RECONNECT
        )
        try:
            async with client:
                call = asyncio.ensure_future(client.other.sleep(seconds=30))
                await eventually(lambda: client.pending_count == 1)
                proxy.mode = "stall"  # a network partition: nothing moves, nothing closes
                with pytest.raises(RpcChannelClosedError, match="keepalive"):
                    await asyncio.wait_for(call, 10)
                proxy.mode = "pass"
                await eventually(lambda: client.reconnects >= 1 and client.is_connected, timeout=10)
                assert (await client.other.add(a=2, b=3)).result == 5
        finally:
            await proxy.close()


async def test_protocol_ping_keepalive_detects_a_partition(server_kind: str) -> None:
    with start_server(server_kind) as srv:
        proxy = await TcpProxy(srv.port).start()
        config = WebSocketRpcClientConfig(keepalive=RpcKeepaliveConfig(interval=0.1, max_failures=2))
        try:
            async with WebSocketRpcClient(proxy.url(), RpcMethodsBase(), config=config) as client:
                call = asyncio.ensure_future(client.other.sleep(seconds=30))
                await eventually(lambda: client.pending_count == 1)
                proxy.mode = "stall"
                with pytest.raises(RpcChannelClosedError):
                    await asyncio.wait_for(call, 10)
                assert client.pending_count == 0 and not client.is_connected
        finally:
            await proxy.close()


async def test_calls_while_disconnected_fail_fast(server: Any) -> None:
    proxy = await TcpProxy(server.port).start()
    client = WebSocketRpcClient(
        proxy.url(), RpcMethodsBase(), auto_reconnect=True, reconnect_delay=0.01, max_reconnect_attempts=1
    )
    try:
        async with client:
            proxy.cut()
            await proxy.close()  # nothing listens any more: reconnect gives up at once
            await eventually(lambda: not client.is_connected)
            with pytest.raises(RpcChannelClosedError):
                await client.other.add(a=1, b=1)
    finally:
        await proxy.close()


def _certs(tmp_path: Any, expired: bool) -> Any:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.timezone.utc)
    kwargs = {"not_before": now - datetime.timedelta(days=10), "not_after": now - datetime.timedelta(days=1)}
    cert = ca.issue_cert("127.0.0.1", "localhost", **(kwargs if expired else {}))
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return str(certfile), str(keyfile), client_ctx


async def test_wss_with_a_valid_certificate(tmp_path: Any, server_kind: str) -> None:
    certfile, keyfile, ctx = _certs(tmp_path, expired=False)
    with start_server(server_kind, ssl_certfile=certfile, ssl_keyfile=keyfile) as srv:
        async with WebSocketRpcClient(srv.url(scheme="wss"), RpcMethodsBase(), ssl=ctx) as client:
            assert (await client.other.add(a=1, b=2)).result == 3


async def test_expired_server_certificate_is_refused_without_retrying(tmp_path: Any, server_kind: str) -> None:
    certfile, keyfile, ctx = _certs(tmp_path, expired=True)
    with start_server(server_kind, ssl_certfile=certfile, ssl_keyfile=keyfile) as srv:
        with pytest.raises(RpcConnectionError, match="expired") as refused:
            async with WebSocketRpcClient(srv.url(scheme="wss"), RpcMethodsBase(), ssl=ctx, retry_config=FAST_RETRY):
                pass
        assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
