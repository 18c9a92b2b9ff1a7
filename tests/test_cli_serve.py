"""``fastwsrpc serve``: SIGTERM drains, and ``--workers N --broker URL`` (issue 23, items 1 and 3).

Each server is ``python -m fastwsrpc serve tests.cli_app:NodeMethods`` in a process
of its own, as an operator runs it; the workers' broker is a real ``redis-server``
of the test's own on a free loopback port (``tests.brokers``), stopped by its PID.
Every wait is bounded: a readiness line, a close code, a new PID.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from fastwsrpc import WebSocketRpcClient, cli
from fastwsrpc.errors import RpcHandshakeRejectedError

from .brokers import BrokerServer, RedisServer
from .cli_app import ClientMethods
from .support import free_port
from .test_cli import ROOT, run

pytestmark = pytest.mark.e2e

TARGET = "tests.cli_app:NodeMethods"


async def start_serve(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastwsrpc",
        "serve",
        TARGET,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_listening(port: int, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """Until something accepts on ``port`` (bounded; fails at once if the server exited)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert proc.returncode is None, "the server exited before listening"
            assert time.monotonic() < deadline, f"nothing listens on {port} after {timeout} s"
            await asyncio.sleep(0.05)  # polling interval of a bounded readiness loop
            continue
        writer.close()
        await writer.wait_closed()
        return


def health(port: int) -> int:
    """The status of ``GET /healthz``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        exc.close()
        return status


async def stop(proc: asyncio.subprocess.Process, pids: Optional[Set[int]] = None) -> None:
    """Whatever happened: the server and the workers we know of are gone."""
    for pid in pids or ():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.returncode is None:
        proc.kill()
    await proc.communicate()


# ---------------------------------------------------------------- drain on SIGTERM
@pytest.mark.parametrize("flags", [[], ["--asgi"]], ids=["native", "asgi"])
async def test_sigterm_drains_clients_see_1012_and_the_server_exits_0(flags: List[str]) -> None:
    port = free_port()
    proc = await start_serve("--port", str(port), "--drain-timeout", "3", "--log-level", "warning", *flags)
    clients: List[WebSocketRpcClient] = []
    try:
        await wait_listening(port, proc)
        assert health(port) == 200
        for _ in range(2):
            client = WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws", retry_config=False)
            await client.__aenter__()
            clients.append(client)
            assert (await client.call("add", {"a": 1, "b": 2})).result == 3
        proc.send_signal(signal.SIGTERM)
        # One connection of the two is closed at once, the other half-way through the window.
        readers = {asyncio.ensure_future(client.wait_on_reader()): client for client in clients}
        done, pending = await asyncio.wait(readers, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1, "the drain did not spread its closes over the window"
        assert readers[done.pop()].close_code == 1012
        assert health(port) == 503  # load balancers stop sending clients here
        with pytest.raises(RpcHandshakeRejectedError) as refused:
            async with WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws", retry_config=False):
                pass
        assert refused.value.status == 503
        last = pending.pop()
        await asyncio.wait_for(last, 10)
        assert readers[last].close_code == 1012
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
        await stop(proc)


# ---------------------------------------------------------------- several workers
@pytest.fixture
def redis() -> Iterator[BrokerServer]:
    """A Redis of this test's own on a free loopback port, stopped by its PID."""
    server = RedisServer().start()
    yield server
    server.close()


class Workers:
    """Reads the supervisor's log: which worker has which PID."""

    LISTENING = re.compile(r"worker (\d+) \(pid (\d+)\) listening")

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pids: Dict[int, int] = {}  # worker index -> pid
        self.seen: Set[int] = set()  # every worker PID so far
        self.log: List[str] = []

    async def line(self, timeout: float = 30.0) -> str:
        assert self.proc.stderr is not None
        raw = await asyncio.wait_for(self.proc.stderr.readline(), timeout)
        assert raw, f"the server exited; its log: {self.log}"
        text = raw.decode().rstrip()
        self.log.append(text)
        found = self.LISTENING.search(text)
        if found:
            self.pids[int(found.group(1))] = int(found.group(2))
            self.seen.add(int(found.group(2)))
        return text

    async def until(self, predicate: Any, what: str) -> None:
        for _ in range(200):  # bounded: a few lines per worker start
            if predicate():
                return
            await self.line()
        raise AssertionError(f"{what} never happened; the server's log: {self.log}")


async def connect(port: int, name: str) -> Tuple[WebSocketRpcClient, int]:
    """A client named ``name`` (the path's {client_id}) and the PID of the worker holding it."""
    client = WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws/{name}", ClientMethods(name), retry_config=False)
    await client.__aenter__()
    return client, (await client.call("pid")).result


async def client_on(port: int, pid: int, clients: List[WebSocketRpcClient], prefix: str) -> WebSocketRpcClient:
    """Connect clients until the kernel gives one to worker ``pid`` (it spreads them by a hash of the address)."""
    for n in range(64):  # a miss is 1 in 2 per connection: 64 misses in a row would be a bug
        client, answered = await connect(port, f"{prefix}-{n}")
        clients.append(client)
        if answered == pid:
            return client
    raise AssertionError(f"no connection reached worker pid {pid} in 64 tries")


async def test_workers_share_the_port_route_calls_between_them_and_come_back_after_a_kill(
    redis: BrokerServer,
) -> None:
    port = free_port()
    proc = await start_serve(
        "--port",
        str(port),
        "--path",
        "/ws/{client_id}",
        "--workers",
        "2",
        "--broker",
        redis.url,
        "--drain-timeout",
        "2",
        "--log-level",
        "warning",
    )
    workers = Workers(proc)
    clients: List[WebSocketRpcClient] = []
    try:
        await workers.until(lambda: len(workers.pids) == 2, "two workers listening")
        first, second = workers.pids[1], workers.pids[2]
        assert first != second and proc.pid not in (first, second)

        # Both PIDs accept connections on the one port.
        a = await client_on(port, first, clients, "a")
        b = await client_on(port, second, clients, "b")
        a_name, b_name = a.methods.name, b.methods.name  # type: ignore[attr-defined]

        # A call from a client on one worker reaches a client on the other, both ways (through Redis).
        assert (await a.call("route", {"client_id": b_name, "method": "whoami"})).result == b_name
        assert (await b.call("route", {"client_id": a_name, "method": "whoami"})).result == a_name

        # Killing a worker gets it restarted: a new PID appears, and serves, as a node of the cluster.
        os.kill(first, signal.SIGKILL)
        await asyncio.wait_for(a.wait_on_reader(), 10)
        await workers.until(lambda: workers.pids[1] != first, "worker 1 restarted")
        assert any(f"worker 1 (pid {first}) was killed by SIGKILL; restarting it" in line for line in workers.log)
        third = workers.pids[1]
        assert third not in (first, second)
        c = await client_on(port, third, clients, "c")
        assert (await c.call("route", {"client_id": b_name, "method": "whoami"})).result == b_name
        assert (await b.call("route", {"client_id": c.methods.name, "method": "whoami"})).result == c.methods.name  # type: ignore[attr-defined]

        # SIGTERM is passed on as a drain: every connection still open closes with 1012, and all exit.
        open_clients = [client for client in clients if client.is_connected]
        proc.send_signal(signal.SIGTERM)
        for client in open_clients:
            await asyncio.wait_for(client.wait_on_reader(), 15)
            assert client.close_code == 1012
        await workers.until(lambda: "fastwsrpc: all workers stopped" in workers.log, "the end")
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        for pid in (second, third):
            assert not _alive(pid), f"worker pid {pid} outlived the server"
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
        await stop(proc, workers.seen)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_workers_whose_supervisor_is_killed_drain_and_exit(redis: BrokerServer) -> None:
    port = free_port()
    proc = await start_serve(
        "--port",
        str(port),
        "--path",
        "/ws/{client_id}",
        "--workers",
        "2",
        "--broker",
        redis.url,
        "--drain-timeout",
        "1",
        "--log-level",
        "warning",
    )
    workers = Workers(proc)
    try:
        await workers.until(lambda: len(workers.pids) == 2, "two workers listening")
        client, _ = await connect(port, "orphaned")
        proc.kill()  # SIGKILL: no goodbye, its workers must notice by themselves
        await asyncio.wait_for(client.wait_on_reader(), 15)
        assert client.close_code == 1012
        await client.__aexit__(None, None, None)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers.seen):  # bounded: see the deadline
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            await asyncio.sleep(0.05)
    finally:
        await stop(proc, workers.seen)


async def test_a_worker_that_keeps_dying_is_restarted_5_times_then_the_server_gives_up(
    redis: BrokerServer,
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastwsrpc",
        "serve",
        "tests.cli_app:BrokenMethods",
        "--port",
        str(port),
        "--workers",
        "2",
        "--broker",
        redis.url,
        "--log-level",
        "critical",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        await stop(proc)
    log = err.decode()
    assert proc.returncode == 1
    assert log.count("restarting it") == cli.MAX_RESTARTS
    assert "5 restarts within 60 s already: giving up" in log


# ---------------------------------------------------------------- refused before anything starts
def test_workers_without_a_broker_exit_2_saying_why(capsys: Any, monkeypatch: Any) -> None:
    code, _, err = run(capsys, "serve", TARGET, "--workers", "2")
    assert code == 2
    assert "--workers 2 needs --broker redis://... or nats://..." in err
    assert "a call to a client held by another worker could not be routed" in err
    code, _, err = run(capsys, "serve", TARGET, "--workers", "2", "--broker", "memory://")
    assert code == 2 and "needs --broker" in err
    for args, message in (
        (["--workers", "0"], "--workers must be at least 1"),
        (["--drain-timeout", "-1"], "--drain-timeout must be 0 or more"),
        (["--broker", "amqp://x"], "unknown broker URL scheme 'amqp'"),
        (["--broker", "redis://u:secret@127.0.0.1:1/0", "--workers", "2", "--port", "0"], "fixed --port"),
    ):
        code, _, err = run(capsys, "serve", TARGET, *args)
        assert code == 2 and message in err and "secret" not in err, (args, err)
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    code, _, err = run(capsys, "serve", TARGET, "--workers", "2", "--broker", "redis://127.0.0.1:1/0")
    assert code == 2 and "needs SO_REUSEPORT" in err and "which this platform does not have" in err


def test_workers_on_a_port_in_use_exit_2(capsys: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        code, out, err = run(
            capsys, "serve", TARGET, "--workers", "2", "--broker", "redis://127.0.0.1:1/0", "--port", port
        )
    assert (code, out) == (2, "") and f"cannot listen on 127.0.0.1:{port}" in err


def test_serve_help_documents_drain_and_workers(capsys: Any) -> None:
    code, out, _ = run(capsys, "serve", "--help")
    text = " ".join(out.split())
    assert code == 0
    for fragment in (
        "--drain-timeout SECONDS",
        "(default: 30.0)",
        "--workers N",
        "--broker URL",
        "SO_REUSEPORT",
        "1012",
        "/healthz",
        "5 restarts a minute",
    ):
        assert fragment in text, fragment
    assert "--supervisor-fd" not in text
