"""The one retry builder (fastwsrpc.retry) and the client's connects and reconnects built on it.

The waits are recorded, not slept: each test passes a ``sleep`` that appends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, List

import pytest
import tenacity

from fastwsrpc import RpcConnectionError, RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient
from fastwsrpc.retry import backoff_retrying

from .support import ServerThread, free_port
from .test_client_resilience import quitter_app


class Recorder:
    def __init__(self) -> None:
        self.delays: List[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def failing(retrying: tenacity.AsyncRetrying, exc: BaseException, succeed_at: int = 0) -> int:
    """Run attempts that raise ``exc`` until attempt ``succeed_at`` (0: never); the attempts made."""
    attempts = 0
    async for attempt in retrying:
        with attempt:
            attempts += 1
            if attempts != succeed_at:
                raise exc
    return attempts


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


async def test_the_waits_double_from_min_wait_up_to_max_wait_and_the_last_failure_is_raised() -> None:
    sleep = Recorder()
    retrying = backoff_retrying(
        max_attempts=5, min_wait=0.1, max_wait=0.3, jitter=False, transient=transient, sleep=sleep
    )
    with pytest.raises(ConnectionRefusedError):  # itself, not tenacity's RetryError
        await failing(retrying, ConnectionRefusedError("no"))
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.3, 0.3])


async def test_jitter_adds_up_to_a_quarter() -> None:
    sleep = Recorder()
    retrying = backoff_retrying(max_attempts=60, min_wait=0.1, max_wait=0.4, transient=transient, sleep=sleep)
    with pytest.raises(ConnectionError):
        await failing(retrying, ConnectionError())
    bases = [0.1, 0.2] + [0.4] * 57
    assert all(base <= delay <= base * 1.25 for base, delay in zip(bases, sleep.delays))
    assert len(set(sleep.delays)) > 1  # not the same delay every time


async def test_a_failure_that_is_not_transient_is_raised_at_once() -> None:
    sleep = Recorder()
    retrying = backoff_retrying(max_attempts=5, min_wait=0.1, max_wait=1, transient=transient, sleep=sleep)
    with pytest.raises(ValueError):
        await failing(retrying, ValueError("a wrong URI"))
    assert sleep.delays == []


async def test_no_max_attempts_retries_until_it_succeeds_and_the_wait_stays_capped() -> None:
    sleep = Recorder()
    logged: List[int] = []
    retrying = backoff_retrying(
        max_attempts=None,
        min_wait=0.05,
        max_wait=2.0,
        transient=lambda exc: isinstance(exc, Exception),
        before_sleep=lambda state: logged.append(state.attempt_number),
        sleep=sleep,
    )
    # Past ~1030 attempts min_wait * 2 ** n no longer fits a float: a broker down for hours.
    assert await failing(retrying, OSError(), succeed_at=1200) == 1200
    assert len(sleep.delays) == 1199 and max(sleep.delays) <= 2.0 * 1.25
    assert logged == list(range(1, 1200))


# ---------------------------------------------------------------- the client


def dead_url() -> str:
    return f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there


async def test_the_first_connect_backs_off_as_its_retry_config_says(caplog: Any) -> None:
    client = WebSocketRpcClient(
        dead_url(),
        RpcMethodsBase(),
        retry_config=RpcRetryConfig(max_attempts=3, min_wait=0.5, max_wait=0.6, jitter=False),
    )
    client._sleep = sleep = Recorder()
    with caplog.at_level(logging.WARNING, logger="fastwsrpc"), pytest.raises(RpcConnectionError):
        await client.__aenter__()
    assert sleep.delays == [0.5, 0.6]
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and "(attempt 1 of 3)" in retries[0] and "connection refused" in retries[0]


async def test_retry_config_false_tries_once() -> None:
    client = WebSocketRpcClient(dead_url(), RpcMethodsBase(), retry_config=False)
    client._sleep = sleep = Recorder()
    with pytest.raises(RpcConnectionError):
        await client.__aenter__()
    assert sleep.delays == []


async def test_a_tenacity_dict_is_tenacity_s_own_kwargs() -> None:
    retry = {"stop": tenacity.stop_after_attempt(3), "wait": tenacity.wait_fixed(0.3)}
    client = WebSocketRpcClient(dead_url(), RpcMethodsBase(), retry_config=retry)
    client._sleep = sleep = Recorder()
    with pytest.raises(RpcConnectionError):
        await client.__aenter__()
    assert sleep.delays == [0.3, 0.3]


async def test_a_reconnect_delay_over_half_of_max_wait_still_reconnects() -> None:
    # The reconnect backoff starts at 2 * reconnect_delay; above max_wait it is
    # capped there, instead of failing on "max_wait must be >= min_wait".
    srv = ServerThread(quitter_app()).start()
    client = WebSocketRpcClient(
        srv.url(),
        RpcMethodsBase(),
        auto_reconnect=True,
        reconnect_delay=40,
        max_reconnect_attempts=2,
    )
    client._sleep = sleep = Recorder()
    async with client:
        srv.stop()
        await asyncio.wait_for(client.wait_on_reader(), 30)
    assert sleep.delays[0] == 40 and 60 <= sleep.delays[1] <= 60 * 1.25  # retry.max_wait: 60 s
    assert isinstance(client.last_error, RpcConnectionError)
