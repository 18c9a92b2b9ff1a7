"""Interceptors and OpenTelemetry tracing (issue 14), on memory pairs, both twins."""

from __future__ import annotations

import asyncio
from typing import Any, List, Tuple

import pytest

from fastwsrpc import RemoteValueError, RpcChannel, RpcMethodsBase, RpcSettings
from fastwsrpc.interceptors import RpcCall, RpcInterceptor
from fastwsrpc.testing import memory_pair


class Methods(RpcMethodsBase):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def whoami(self) -> str:
        return "client"

    async def ask_back(self) -> str:
        return (await self.channel.other.whoami()).result  # type: ignore[no-any-return]

    async def fail(self) -> None:
        raise RemoteValueError("nope", code=-32050)

    async def note(self, text: str) -> None:
        pass


class Recorder(RpcInterceptor):
    def __init__(self, name: str, log: List[Tuple[str, ...]]) -> None:
        self.name = name
        self.log = log

    async def incoming(self, call: RpcCall, proceed: Any) -> Any:
        self.log.append((self.name, "in", call.method, "before"))
        try:
            result = await proceed()
        except Exception as exc:
            self.log.append((self.name, "in", call.method, f"raised {type(exc).__name__}"))
            raise
        self.log.append((self.name, "in", call.method, f"-> {result!r}"))
        return result

    async def outgoing(self, call: RpcCall, proceed: Any) -> Any:
        self.log.append((self.name, "out", call.method, "before"))
        response = await proceed()
        self.log.append((self.name, "out", call.method, f"id {call.id}"))
        return response


class Refuse(RpcInterceptor):
    async def incoming(self, call: RpcCall, proceed: Any) -> Any:
        if call.method == "add" and call.params.get("a") == 13:
            raise RemoteValueError("unlucky", code=-32013, data={"a": 13})
        return await proceed()


async def pair(
    speedups: Any, server_interceptors: Any = (), client_interceptors: Any = (), features: Any = frozenset()
) -> Any:
    a, b = memory_pair()
    server = RpcChannel(
        Methods(),
        a,
        settings=RpcSettings(),
        speedups=speedups,
        interceptors=server_interceptors,
        peer_features=features,
    )
    client = RpcChannel(
        Methods(),
        b,
        settings=RpcSettings(),
        speedups=speedups,
        interceptors=client_interceptors,
        peer_features=features,
    )
    readers = [asyncio.ensure_future(server.run()), asyncio.ensure_future(client.run())]
    return server, client, readers


async def close(server: RpcChannel, client: RpcChannel, readers: Any) -> None:
    await client.close()
    await server.close()
    await asyncio.gather(*readers, return_exceptions=True)


async def test_interceptors_see_calls_both_ways_in_order(speedups: Any) -> None:
    log: List[Tuple[str, ...]] = []
    server, client, readers = await pair(speedups, [Recorder("s1", log), Recorder("s2", log)], [Recorder("c", log)])
    assert (await client.other.add(a=1, b=2)).result == 3
    assert log == [
        ("c", "out", "add", "before"),
        ("s1", "in", "add", "before"),
        ("s2", "in", "add", "before"),
        ("s2", "in", "add", "-> 3"),
        ("s1", "in", "add", "-> 3"),
        ("c", "out", "add", "id 1"),
    ]
    log.clear()
    await client.notify("note", {"text": "hi"})
    with pytest.raises(RemoteValueError):
        await client.other.fail()
    await asyncio.wait_for(_until(lambda: ("s2", "in", "note", "-> None") in log), 10)
    assert ("s1", "in", "fail", "raised RemoteValueError") in log
    await close(server, client, readers)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0)


async def test_an_interceptor_may_refuse_a_call(speedups: Any) -> None:
    server, client, readers = await pair(speedups, [Refuse()])
    with pytest.raises(RemoteValueError) as refused:
        await client.other.add(a=13, b=1)
    assert refused.value.code == -32013 and refused.value.data == {"a": 13}
    assert (await client.other.add(a=12, b=1)).result == 13
    await close(server, client, readers)


async def test_meta_travels_only_to_a_peer_that_declared_it(speedups: Any) -> None:
    seen: List[Any] = []

    class Stamp(RpcInterceptor):
        async def outgoing(self, call: RpcCall, proceed: Any) -> Any:
            call.meta["stamp"] = "x1"
            return await proceed()

    class Read(RpcInterceptor):
        async def incoming(self, call: RpcCall, proceed: Any) -> Any:
            seen.append(dict(call.meta))
            return await proceed()

    for features, expected in ((frozenset({"meta"}), {"stamp": "x1"}), (frozenset(), {})):
        seen.clear()
        server, client, readers = await pair(speedups, [Read()], [Stamp()], features)
        assert (await client.other.add(a=1, b=1)).result == 2
        assert seen == [expected]
        await close(server, client, readers)


otel = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")


def _tracing() -> Tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_one_trace_across_the_wire_with_a_nested_call_back(speedups: Any) -> None:
    from opentelemetry.trace import SpanKind

    from fastwsrpc.otel import OpenTelemetryInterceptor

    provider, exporter = _tracing()
    tracing = [OpenTelemetryInterceptor(provider)]
    server, client, readers = await pair(speedups, tracing, tracing, frozenset({"meta"}))
    assert (await client.other.ask_back()).result == "client"
    with pytest.raises(RemoteValueError):
        await client.other.fail()
    await close(server, client, readers)
    spans = {(s.name, s.kind): s for s in exporter.get_finished_spans()}
    outer = spans[("ask_back", SpanKind.CLIENT)]
    handled = spans[("ask_back", SpanKind.SERVER)]
    back = spans[("whoami", SpanKind.CLIENT)]
    answered = spans[("whoami", SpanKind.SERVER)]
    trace_id = outer.context.trace_id
    assert {s.context.trace_id for s in (handled, back, answered)} == {trace_id}
    assert handled.parent.span_id == outer.context.span_id
    assert back.parent.span_id == handled.context.span_id
    assert answered.parent.span_id == back.context.span_id
    assert outer.attributes["rpc.system"] == "jsonrpc" and outer.attributes["rpc.method"] == "ask_back"
    assert outer.attributes["rpc.jsonrpc.request_id"] == "1"
    failed = spans[("fail", SpanKind.SERVER)]
    assert failed.attributes["rpc.jsonrpc.error_code"] == -32050
    assert spans[("fail", SpanKind.CLIENT)].attributes["rpc.jsonrpc.error_code"] == -32050
