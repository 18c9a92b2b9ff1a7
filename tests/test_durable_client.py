"""Nothing lost across a reconnect, with our client: idempotent calls, subscriptions, a list of URLs."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest

from fastwsrpc import RpcChannelClosedError, RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient

from .support import TcpProxy, eventually, serve_methods
from .test_sessions import Counting

pytestmark = pytest.mark.e2e

FAST: Dict[str, Any] = {
    "retry_config": RpcRetryConfig(max_attempts=50, min_wait=0.01, max_wait=0.05),
    "reconnect_delay": 0.01,
}


async def test_an_idempotent_call_survives_a_dropped_connection_and_runs_once(server_kind: str) -> None:
    methods = Counting()
    with serve_methods(server_kind, methods) as srv:
        proxy = await TcpProxy(srv.port).start()
        try:
            async with WebSocketRpcClient(proxy.url(), RpcMethodsBase(), auto_reconnect=True, **FAST) as client:
                assert client.session_id is not None and not client.session_resumed
                kept = asyncio.ensure_future(client.call("slow", {"n": 5}, idempotent=True))
                lost = asyncio.ensure_future(client.other.slow(n=6))
                await eventually(lambda: methods.state["started"] == 2, timeout=10)
                proxy.cut()  # the link dies under both calls
                with pytest.raises(RpcChannelClosedError):
                    await asyncio.wait_for(lost, 10)  # an ordinary call in flight fails, as it always did
                await eventually(lambda: client.reconnects >= 1 and client.is_connected, timeout=10)
                assert client.session_resumed
                methods.open_gate()
                assert (await asyncio.wait_for(kept, 10)).result == 5
            assert methods.state["runs"] == 2  # the idempotent one ran once, though it was sent twice
        finally:
            await proxy.close()


async def test_idempotent_methods_by_name_through_other(server_kind: str) -> None:
    methods = Counting()
    with serve_methods(server_kind, methods) as srv:
        proxy = await TcpProxy(srv.port).start()
        try:
            client = WebSocketRpcClient(
                proxy.url(), RpcMethodsBase(), auto_reconnect=True, idempotent_methods={"slow"}, **FAST
            )
            async with client:
                call = asyncio.ensure_future(client.other.slow(n=8))
                await eventually(lambda: methods.state["started"] == 1, timeout=10)
                proxy.cut()
                await eventually(lambda: client.reconnects >= 1 and client.is_connected, timeout=10)
                methods.open_gate()
                assert (await asyncio.wait_for(call, 10)).result == 8
            assert methods.state["runs"] == 1
        finally:
            await proxy.close()


class Publisher(RpcMethodsBase):
    pass


def publish_from_test(srv: Any, target: Any, topic: str, data: Any) -> asyncio.Future[Any]:
    assert srv.loop is not None
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(target.publish(topic, data), srv.loop))


@pytest.mark.parametrize("kind", ["fastapi", "native"])
async def test_a_subscription_recovers_what_was_published_while_the_link_was_down(kind: str) -> None:
    server, target = build_with_history(kind, history=100)
    with server as srv:
        proxy = await TcpProxy(srv.port).start()
        try:
            async with WebSocketRpcClient(proxy.url(), RpcMethodsBase(), auto_reconnect=True, **FAST) as client:
                subscription = client.subscribe("news")
                await subscription.open()
                seen: List[int] = []
                for i in range(5):
                    await publish_from_test(srv, target, "news", i)
                for _ in range(5):
                    seen.append((await asyncio.wait_for(subscription.next(), 10)).data)
                proxy.mode = "stall"  # a partition: nothing gets through
                proxy.cut()
                for i in range(5, 15):
                    await publish_from_test(srv, target, "news", i)  # published while the client is away
                proxy.mode = "pass"
                while len(seen) < 20:
                    if len(seen) == 15:
                        await publish_from_test(srv, target, "news", len(seen))  # and one more, live
                        for i in range(16, 20):
                            await publish_from_test(srv, target, "news", i)
                    event = await asyncio.wait_for(subscription.next(), 20)
                    assert not event.is_notice, event
                    seen.append(event.data)
                assert seen == list(range(20))  # in order, none twice, none missing
                assert subscription.recovered is True and subscription.resubscribes == 1
                await subscription.aclose()
        finally:
            await proxy.close()


@pytest.mark.parametrize("kind", ["native"])
async def test_a_gap_longer_than_the_history_is_told_not_hidden(kind: str) -> None:
    server, target = build_with_history(kind, history=3)
    with server as srv:
        proxy = await TcpProxy(srv.port).start()
        try:
            async with WebSocketRpcClient(proxy.url(), RpcMethodsBase(), auto_reconnect=True, **FAST) as client:
                subscription = client.subscribe("news")
                await subscription.open()
                await publish_from_test(srv, target, "news", 0)
                assert (await asyncio.wait_for(subscription.next(), 10)).data == 0
                proxy.mode = "stall"
                proxy.cut()
                for i in range(1, 11):  # 10 while away, the history keeps 3
                    await publish_from_test(srv, target, "news", i)
                proxy.mode = "pass"
                notice = await asyncio.wait_for(subscription.next(), 20)
                assert notice.is_notice and notice.recovered is False and notice.reason == "gap"
                assert subscription.recovered is False
                await subscription.aclose()
        finally:
            await proxy.close()


def build_with_history(kind: str, history: int) -> Any:
    from .support import NativeServerThread, ServerThread

    if kind == "fastapi":
        from fastapi import FastAPI

        from fastwsrpc import WebSocketRpcEndpoint

        app = FastAPI()
        endpoint = WebSocketRpcEndpoint(Publisher(), topic_history=history)
        endpoint.register_route(app, "/ws")
        return ServerThread(app), endpoint
    from fastwsrpc.server import WebSocketRpcServer

    native = WebSocketRpcServer(Publisher(), topic_history=history)
    return NativeServerThread(native), native


async def test_a_client_with_two_urls_moves_to_the_other_when_one_drains() -> None:
    from fastwsrpc.server import WebSocketRpcServer

    from .support import NativeServerThread

    first = WebSocketRpcServer(Counting())
    second = WebSocketRpcServer(Counting())
    with NativeServerThread(first) as a, NativeServerThread(second) as b:
        async with WebSocketRpcClient([a.url(), b.url()], RpcMethodsBase(), auto_reconnect=True, **FAST) as client:
            assert client.uri == a.url()
            assert (await client.other.count(n=1)).result == 1
            assert a.loop is not None
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(first.drain(0.2), a.loop))
            await eventually(lambda: client.reconnects >= 1 and client.is_connected, timeout=10)
            assert client.uri == b.url()  # 1012 from the first: the client went to the next URL
            assert (await client.other.count(n=2)).result == 2
