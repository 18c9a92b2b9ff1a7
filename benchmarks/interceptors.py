"""What interceptors cost per call: none installed, a no-op one, and OpenTelemetry tracing.

``python benchmarks/interceptors.py``: sequential and concurrent calls on two
channels joined in memory (no socket, so the channel's own cost shows), each
figure the best of a few rounds. Quote the ratios: the machine is shared.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List

from fastwsrpc import RpcChannel, RpcMethodsBase, RpcSettings
from fastwsrpc.interceptors import RpcInterceptor
from fastwsrpc.testing import memory_pair

N = 20_000


class Methods(RpcMethodsBase):
    async def add(self, a: int, b: int) -> int:
        return a + b


class Noop(RpcInterceptor):
    pass


async def rate(interceptors: List[Any], concurrent: bool) -> float:
    a, b = memory_pair(maxsize=256)
    features = frozenset({"meta"})
    kw: Dict[str, Any] = {"settings": RpcSettings(max_pending_requests=10_000), "peer_features": features}
    server = RpcChannel(Methods(), a, interceptors=interceptors, **kw)
    client = RpcChannel(Methods(), b, interceptors=interceptors, **kw)
    readers = [asyncio.ensure_future(server.run()), asyncio.ensure_future(client.run())]
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        if concurrent:
            for k in range(0, N, 500):
                await asyncio.gather(*(client.call("add", {"a": i, "b": 1}) for i in range(k, k + 500)))
        else:
            for i in range(N):
                await client.call("add", {"a": i, "b": 1})
        best = max(best, N / (time.perf_counter() - start))
    await client.close()
    await server.close()
    await asyncio.gather(*readers, return_exceptions=True)
    return best


async def main() -> None:
    contenders: Dict[str, List[Any]] = {"none": [], "no-op interceptor": [Noop()]}
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from fastwsrpc.otel import OpenTelemetryInterceptor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        contenders["OpenTelemetry (SDK, in-memory exporter)"] = [OpenTelemetryInterceptor(provider)]
    except ImportError:
        print("(OpenTelemetry SDK not installed: pip install 'fastwsrpc[otel]' opentelemetry-sdk)")
    for concurrent in (False, True):
        base = 0.0
        print("concurrent (500 in flight)" if concurrent else "sequential")
        for label, interceptors in contenders.items():
            value = await rate(interceptors, concurrent)
            base = base or value
            print(f"  {label:42s} {value:10,.0f} calls/s  {value / base:.2f}x  {1e6 / value:7.1f} us/call")


if __name__ == "__main__":
    asyncio.run(main())
