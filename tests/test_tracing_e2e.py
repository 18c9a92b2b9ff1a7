"""One trace across a real connection, through a nested server-to-client call (issue 14), on both servers."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient

from .support import serve_methods

pytestmark = pytest.mark.e2e
pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")


class ServerSide(RpcMethodsBase):
    async def ask_back(self) -> str:
        return str((await self.channel.other.whoami()).result)


class ClientSide(RpcMethodsBase):
    async def whoami(self) -> str:
        return "client"


async def test_the_servers_span_is_the_child_of_the_callers(server_kind: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from fastwsrpc.otel import OpenTelemetryInterceptor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = [OpenTelemetryInterceptor(provider)]
    with serve_methods(server_kind, ServerSide(), interceptors=tracing) as srv:
        async with WebSocketRpcClient(srv.url("/ws"), ClientSide(), interceptors=tracing) as client:
            assert client.channel is not None and client.channel.peer_features == frozenset({"meta"})
            assert (await client.other.ask_back()).result == "client"
        # A plain JSON-RPC client offers no feature: it sees ordinary frames, no $/meta.
        async with connect(srv.url("/ws")) as ws:
            await ws.send('{"jsonrpc":"2.0","method":"ping","id":1}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"jsonrpc": "2.0", "id": 1, "result": "pong"}
    spans = {(s.name, s.kind): s for s in exporter.get_finished_spans()}
    outer = spans[("ask_back", SpanKind.CLIENT)]
    handled = spans[("ask_back", SpanKind.SERVER)]
    back = spans[("whoami", SpanKind.CLIENT)]
    answered = spans[("whoami", SpanKind.SERVER)]
    assert {s.context.trace_id for s in (handled, back, answered)} == {outer.context.trace_id}
    assert handled.parent is not None and handled.parent.span_id == outer.context.span_id
    assert back.parent is not None and back.parent.span_id == handled.context.span_id
    assert answered.parent is not None and answered.parent.span_id == back.context.span_id
    assert handled.attributes is not None and handled.attributes["rpc.system"] == "jsonrpc"
