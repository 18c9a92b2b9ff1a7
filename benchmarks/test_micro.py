"""Micro benchmarks of the hot path, both twins in one run.

Run: pytest benchmarks/test_micro.py --benchmark-only --benchmark-group-by=func
Regression gate: add --benchmark-autosave, later --benchmark-compare --benchmark-compare-fail=mean:10%
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from fastwsrpc.protocol import encode_request, encode_result

REQUEST = b'{"jsonrpc":"2.0","method":"add","params":{"a":1,"b":2},"id":7}'
RESPONSE = b'{"jsonrpc":"2.0","id":7,"result":3}'
BATCH = b"[" + b",".join([REQUEST] * 20) + b"]"
LIMIT = 10 * 1024 * 1024


def test_decode_request(benchmark: Any, impl: Any) -> None:
    benchmark(impl.decode, REQUEST, LIMIT)


def test_decode_response(benchmark: Any, impl: Any) -> None:
    benchmark(impl.decode, RESPONSE, LIMIT)


def test_classify_request(benchmark: Any, impl: Any) -> None:
    obj = msgspec.json.decode(REQUEST)
    benchmark(impl.classify, obj)


def test_classify_batch_of_20(benchmark: Any, impl: Any) -> None:
    obj = msgspec.json.decode(BATCH)
    benchmark(impl.classify, obj)


def test_check_size_text(benchmark: Any, impl: Any) -> None:
    frame = "\u00e9" * 600_000  # in the band where the exact UTF-8 size is needed
    benchmark(impl.check_size, frame, 2_000_000)


def test_table_register_resolve_64_in_flight(benchmark: Any, impl: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        table = impl.PendingTable(10_000)
        for _ in range(64):
            table.register(loop.create_future())
        futures = [loop.create_future() for _ in range(1000)]

        def cycle() -> None:
            register, resolve = table.register, table.resolve
            for future in futures:
                resolve(register(future), None)

        benchmark(cycle)
    finally:
        loop.close()


def test_table_expire_10k(benchmark: Any, impl: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        futures = [loop.create_future() for _ in range(10_000)]

        def setup() -> Any:
            table = impl.PendingTable(20_000)
            for i, future in enumerate(futures):
                table.add(i, future, float(i))
            return (table,), {}

        benchmark.pedantic(lambda table: table.expire(-1.0), setup=setup, rounds=50)
    finally:
        loop.close()


def test_encode_request(benchmark: Any) -> None:
    benchmark(encode_request, 7, "add", {"a": 1, "b": 2})


def test_encode_result(benchmark: Any) -> None:
    benchmark(encode_result, 7, {"name": "ada", "tags": ["x", "y"], "score": 1.5})
