"""End-to-end benchmark: one publish reaching 1,000 subscribers, on both twins and both servers.

1,000 clients, one connection and one subscription each, on the server under
test (``native`` or ``fastapi``, on loopback, in the module's event loop with
the clients; see ``conftest.py``). A round publishes one event on the server
and ends when every subscriber has read it.

Run: ``pytest benchmarks/test_e2e_topics.py --benchmark-only``.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, List, Tuple

import pytest

from fastwsrpc import RpcMethodsBase

SUBSCRIBERS = 1000
TOPIC = "bench"


def cpu_time(group: str) -> Any:
    """A benchmark of ``group``, timed in CPU seconds of this process: both ends of the connection run here,
    and the time other processes have the CPU is not counted (docs/guide/benchmarks.md, "Why CPU time")."""
    return pytest.mark.benchmark(group=group, timer=time.process_time)


@pytest.fixture(scope="module", params=["native", "fastapi"])
def fan_out(request: Any, loopback: Any) -> Iterator[Tuple[Any, List[Any]]]:
    """(server, subscriptions): a server and 1,000 subscribed clients, closed when the server kind changes."""
    scope = loopback.child()
    try:
        start = scope.start_native if request.param == "native" else scope.start_fastapi
        server = start(RpcMethodsBase())
        subscriptions = []
        for _ in range(SUBSCRIBERS):
            subscription = scope.connect(server.url).subscribe(TOPIC)
            scope.enter(subscription)
            subscriptions.append(subscription)
        yield server, subscriptions
    finally:
        scope.close()


@cpu_time("publish to 1,000 subscribers")
def test_publish(benchmark: Any, loopback: Any, fan_out: Tuple[Any, List[Any]]) -> None:
    server, subscriptions = fan_out

    async def publish() -> None:
        await server.publish(TOPIC, {"price": 1.5})
        for subscription in subscriptions:
            await subscription.next()

    loopback.time(benchmark, publish, 30)
