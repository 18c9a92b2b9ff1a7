"""Streams and topics, measured over a real socket (issue 13's figures).

``python benchmarks/streams.py`` starts a FastAPI server in its own process on
127.0.0.1 and reports, from one run: items/s of one stream with the default
buffer and with a large one, the same items sent as bare notifications, and the
time for one published event to reach 1,000 subscribers. Quote ratios, not
absolute figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any, AsyncIterator, Dict, List

N_ITEMS = 100_000


def serve(fd: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from fastwsrpc import RpcMethodsBase, WebSocketRpcEndpoint

    endpoint: Any = None

    class Feed(RpcMethodsBase):
        async def ticks(self, n: int) -> AsyncIterator[int]:
            for i in range(n):
                yield i

        async def burst(self, n: int) -> int:
            for i in range(n):
                await self.channel.notify("tick", [i])
            return n

        async def publish(self, topic: str, data: Any) -> int:
            await endpoint.publish(topic, data)
            return endpoint.topics.subscriber_count(topic)

        async def forever(self, size: int) -> AsyncIterator[str]:
            while True:
                yield "x" * size

        async def rss(self) -> int:
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

        async def subscribers(self, topic: str) -> int:
            return int(endpoint.topics.subscriber_count(topic))

    app = FastAPI()
    endpoint = WebSocketRpcEndpoint(Feed(), max_pending_requests=5000)
    endpoint.register_route(app, "/ws")
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    asyncio.run(uvicorn.Server(config).serve(sockets=[socket.socket(fileno=fd)]))


async def measure(url: str) -> Dict[str, float]:
    from fastwsrpc import RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient

    got = [0]
    done = asyncio.Event()

    class Counter(RpcMethodsBase):
        async def tick(self, i: int) -> None:
            got[0] += 1
            if got[0] == N_ITEMS:
                done.set()

    retry = RpcRetryConfig(max_attempts=200, min_wait=0.02, max_wait=0.1)
    results: Dict[str, float] = {}
    async with WebSocketRpcClient(url, Counter(), retry_config=retry) as client:
        for label, buffer in (("stream, buffer 16", 16), ("stream, buffer 64", 64), ("stream, buffer 1024", 1024)):
            start = time.perf_counter()
            count = 0
            async for _ in client.other.ticks.stream(n=N_ITEMS, buffer=buffer):
                count += 1
            results[label] = count / (time.perf_counter() - start)
        start = time.perf_counter()
        await client.other.burst(n=N_ITEMS)
        await asyncio.wait_for(done.wait(), 120)
        results["bare notifications"] = N_ITEMS / (time.perf_counter() - start)

    async with WebSocketRpcClient(url, retry_config=retry) as client:
        # A consumer that stops reading: the producer's memory must stay flat.
        before = (await client.other.rss()).result
        async with client.stream("forever", {"size": 1024}) as items:
            await items.next()
            samples = []
            for _ in range(5):
                await asyncio.sleep(1.0)  # a benchmark, not a test: it watches the clock on purpose
                samples.append((await client.other.rss()).result - before)
        results["stalled consumer: producer RSS growth after 5 s (MB)"] = max(samples) / 1e6
        results["stalled consumer: producer RSS growth after 1 s (MB)"] = samples[0] / 1e6

    clients: List[Any] = [WebSocketRpcClient(url, retry_config=retry) for _ in range(100)]
    for c in clients:
        await c.__connect__()
    streams = [c.subscribe("fanout") for c in clients for _ in range(10)]
    await asyncio.gather(*(s.open() for s in streams))
    start = time.perf_counter()
    reached = (await clients[0].other.publish(topic="fanout", data={"x": 1})).result
    await asyncio.gather(*(s.next() for s in streams))
    results[f"fan-out to {reached} subscribers (ms)"] = (time.perf_counter() - start) * 1000
    for s in streams:
        await s.aclose()
    for c in clients:
        await c.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve-fd", type=int)
    args = parser.parse_args()
    if args.serve_fd is not None:
        serve(args.serve_fd)
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve-fd", str(sock.fileno())],
        cwd=root,
        pass_fds=(sock.fileno(),),
    )
    try:
        results = asyncio.run(measure(f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"))
    finally:
        proc.kill()
        proc.wait()
    base = results["bare notifications"]
    for label, value in results.items():
        ratio = f"  ({value / base:.2f}x bare notifications)" if "(" not in label else ""
        print(f"{label:55s} {value:12,.1f}{ratio}")


if __name__ == "__main__":
    main()
