"""Topic recovery on the wire: ``$/subscribe`` with ``since``, as docs/guide/recovery.md specifies it.

Over a memory pair (the client side decodes items into ``TopicEvent``), and over
both real servers with a raw WebSocket client that writes the JSON by hand, as a
client in another language would: the notice first, then exactly the missed
publications, then the live ones.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any, Dict, List, Tuple

import pytest

from fastwsrpc import RpcChannel, RpcMethodsBase, RpcSettings
from fastwsrpc.testing import memory_pair
from fastwsrpc.topics import SUBSCRIBE, TopicEvent, TopicHub

from .support import NativeServerThread, ServerThread


# ------------------------------------------------------------------ memory pair, decoded by our client
async def test_a_resubscriber_on_a_memory_pair_gets_what_it_missed(speedups: Any) -> None:
    hub = TopicHub(history=1000)
    a, b = memory_pair()
    server = RpcChannel(RpcMethodsBase(), a, settings=RpcSettings(), speedups=speedups, topics=hub)
    client = RpcChannel(RpcMethodsBase(), b, settings=RpcSettings(), speedups=speedups)
    readers = [asyncio.ensure_future(server.run()), asyncio.ensure_future(client.run())]
    positions = [await hub.publish("t", n) for n in range(1, 1001)]
    epoch = positions[0][0]  # type: ignore[index]
    params = {"topics": ["t"], "since": {"t": {"epoch": epoch, "offset": 500}}}
    events = client.stream(SUBSCRIBE, params, buffer=64, result_type=TopicEvent)
    await events.open()
    notice = await asyncio.wait_for(events.next(), 20)
    assert notice == TopicEvent("t", epoch=epoch, offset=1000, recovered=True, missed=500)
    assert notice.is_notice
    got = [await asyncio.wait_for(events.next(), 20) for _ in range(500)]
    assert [(e.offset, e.data, e.epoch, e.is_notice) for e in got] == [(n, n, epoch, False) for n in range(501, 1001)]
    await hub.publish("t", 1001)
    assert (await asyncio.wait_for(events.next(), 20)).offset == 1001
    await events.aclose()
    await client.close()
    await server.close()
    await asyncio.gather(*readers, return_exceptions=True)


# ------------------------------------------------------------------ real servers, raw JSON
def _serve_with_history(kind: str, size: int) -> Tuple[Any, Any]:
    """A server of ``kind`` whose hub keeps ``size`` publications per topic; (server thread, its service).

    Through the endpoint's ``topic_history`` keyword once it has one, else by
    giving its service a hub with history (what that keyword does).
    """
    from fastwsrpc import WebSocketRpcEndpoint
    from fastwsrpc.server import WebSocketRpcServer

    wired = "topic_history" in inspect.signature(WebSocketRpcEndpoint).parameters
    options: Dict[str, Any] = {"topic_history": size} if wired else {}
    if kind == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        owner: Any = WebSocketRpcEndpoint(RpcMethodsBase(), **options)
        owner.register_route(app, "/ws")
        thread: Any = ServerThread(app)
    else:
        owner = WebSocketRpcServer(RpcMethodsBase(), **options)
        thread = NativeServerThread(owner, path="/ws")
    service = owner.service
    if not wired:
        hub = TopicHub(history=size)
        hub.attach(service.cluster)
        service.topics = hub  # what each connection's channel is given
        if isinstance(owner, WebSocketRpcEndpoint):
            owner.topics = hub  # the endpoint's own copy of the name (the native server's reads the service)
    return thread, service


async def _on_server(thread: Any, coro: Any) -> Any:
    """Run ``coro`` on the server's own event loop (its thread) and wait for it here."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, thread.loop))


async def _receive(ws: Any) -> Dict[str, Any]:
    message: Dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return message


@pytest.mark.e2e
async def test_a_raw_client_recovers_over_a_real_server(server_kind: str) -> None:
    from websockets.asyncio.client import connect

    thread, service = _serve_with_history(server_kind, 1000)
    with thread:

        async def publish_all() -> List[Any]:
            # The hub's publish goes through the cluster, as the endpoint's does, and answers the position.
            return [await service.topics.publish("prices", {"n": n}) for n in range(1, 1001)]

        positions = await _on_server(thread, publish_all())
        epoch = positions[0][0]
        async with connect(thread.url("/ws")) as ws:
            since = {"prices": {"epoch": epoch, "offset": 500}}
            await ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 7,
                        "method": "$/subscribe",
                        "params": {"topics": ["prices"], "since": since},
                    }
                )
            )
            answer = await _receive(ws)
            assert answer == {"jsonrpc": "2.0", "id": 7, "result": {"stream": 7}}
            credit = {"stream": 7, "window": 10_000}
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "$/stream.credit", "params": credit}))
            items: List[Dict[str, Any]] = []
            while len(items) < 501:
                message = await _receive(ws)
                assert message["method"] == "$/stream.item" and message["params"]["stream"] == 7
                items.append(message["params"]["item"])
            assert items[0] == {"topic": "prices", "recovered": True, "epoch": epoch, "offset": 1000, "missed": 500}
            assert items[1:] == [
                {"topic": "prices", "data": {"n": n}, "dropped": 0, "epoch": epoch, "offset": n}
                for n in range(501, 1001)
            ]
            await _on_server(thread, service.topics.publish("prices", {"n": 1001}))
            live = await _receive(ws)
            assert live["params"]["item"]["offset"] == 1001
            # A position the history no longer holds (it keeps 1000): told, not given a hole.
            await ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 8,
                        "method": "$/subscribe",
                        "params": {"topics": ["prices"], "since": {"prices": {"epoch": epoch, "offset": 0}}},
                    }
                )
            )
            seen = [await _receive(ws) for _ in range(2)]  # the answer, then the notice (initial credits)
            notice = next(m["params"]["item"] for m in seen if m.get("method") == "$/stream.item")
            assert (notice["recovered"], notice["reason"], notice["offset"]) == (False, "gap", 1001)
