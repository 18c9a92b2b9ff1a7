"""Fixtures of the benchmarks (see docs/guide/benchmarks.md).

* ``impl``: each twin of the hot path, for the micro benchmarks (``test_micro.py``).
* ``twin``: each twin for the end-to-end benchmarks, module-wide. While a
  module's servers and clients are made and run, ``fastwsrpc._accel.impl`` is
  that twin, so every channel, the native codec (server and client) and the
  FastAPI path's codec use it, on both sides of the connection.
* ``loopback``: one event loop per module and twin (uvloop when installed) in
  which the module's servers and clients both run, on 127.0.0.1 ports the
  kernel picks. One process and one loop: a round costs what both ends of the
  connection cost, with no other process or thread to wake, which keeps the
  figures steady on a small shared machine. Everything is closed, clients
  first, when the module is done.
* ``--slow-call-path=PERCENT``: proves the gate. Every decode of a frame (two
  per call: the request on the server, the answer on the client) gets extra
  busy work, sized at the start of the session so that a call on
  ``memory_pair`` takes PERCENT % longer on each twin. Nothing in the package
  changes; this session only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterator, List, Optional, TypeVar

import pytest

from fastwsrpc import _accel, _speedups_py

try:
    _compiled: Any = importlib.import_module("fastwsrpc._speedups")
except ImportError:  # pragma: no cover
    _compiled = None

T = TypeVar("T")
#: Longest a server or a client may take to start or stop, in seconds.
SETUP_TIMEOUT = 60.0
#: Open files the session needs: 1,000 connections, both ends in this process.
FD_ROOM = 4096


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("fastwsrpc benchmarks")
    group.addoption(
        "--slow-call-path",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="make a call on memory_pair about PERCENT %% slower (busy work added to every decode) "
        "for this session: a regression for the gate to catch",
    )


def pytest_configure(config: Any) -> None:
    # Room for 1,000 connections with both ends in this process (test_e2e_topics.py).
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FD_ROOM:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (FD_ROOM if hard == resource.RLIM_INFINITY else min(FD_ROOM, hard), hard)
        )


def _twins() -> Dict[str, Any]:
    return {"py": _speedups_py, **({"cython": _compiled} if _compiled is not None else {})}


@pytest.fixture(params=["py", "cython"])
def impl(request: Any) -> Any:
    """Each twin of the hot path, measured side by side in the same run."""
    if request.param == "py":
        return _speedups_py
    if _compiled is None:
        pytest.skip("compiled speedups not built")
    return _compiled


@pytest.fixture(scope="module", params=["py", "cython"])
def twin(request: Any) -> Iterator[Any]:
    """The twin everything the module's end-to-end benchmarks make uses (both ends of every connection)."""
    if request.param == "cython" and _compiled is None:
        pytest.skip("compiled speedups not built")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_accel, "impl", _twins()[request.param])
        yield _accel.impl


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, PyPy
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Loopback:
    """One event loop with servers and clients in it; ``close()`` stops them all, the last made first."""

    def __init__(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self._owns_loop = loop is None
        self.loop = loop or new_loop()
        self._stack = contextlib.AsyncExitStack()

    def child(self) -> Loopback:
        """Servers and clients of a narrower scope in the same loop: its ``close()`` leaves the loop open."""
        return Loopback(self.loop)

    def setup(self, awaitable: Awaitable[T]) -> T:
        """Run a step of setting up (bounded in time)."""
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, SETUP_TIMEOUT))

    def enter(self, context: Any) -> Any:
        """Enter an async context manager now; it is exited by ``close()``."""
        return self.setup(self._stack.enter_async_context(context))

    def start_native(self, methods: Any, **endpoint: Any) -> Any:
        """fastwsrpc's native server on 127.0.0.1:<free port>, path ``/ws``; returns it (``.url``: its URL)."""
        from fastwsrpc.server import WebSocketRpcServer

        server = WebSocketRpcServer(methods, ping_interval=None, **endpoint)
        self.enter(server.listen("127.0.0.1", 0, "/ws"))
        server.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"  # type: ignore[attr-defined]
        return server

    def start_fastapi(self, methods: Any, **endpoint: Any) -> Any:
        """The FastAPI endpoint under uvicorn (its defaults: the sans-I/O websockets protocol); returns the endpoint."""
        from fastapi import FastAPI

        from fastwsrpc import WebSocketRpcEndpoint

        app = FastAPI()
        rpc = WebSocketRpcEndpoint(methods, **endpoint)
        rpc.register_route(app, "/ws")
        self.enter(_uvicorn(app, rpc))
        return rpc

    def connect(self, url: str, methods: Any = None, **options: Any) -> Any:
        """A connected ``WebSocketRpcClient`` (native transport; no retry, no pings)."""
        from fastwsrpc import WebSocketRpcClient

        options = {"retry_config": False, "ping_interval": None, "max_pending_requests": 10_000, **options}
        return self.enter(WebSocketRpcClient(url, methods, **options))

    def time(self, benchmark: Any, work: Callable[[], Awaitable[Any]], rounds: int) -> None:
        """Benchmark ``rounds`` rounds of ``await work()`` in this loop, after two rounds of warm-up."""
        run = self.loop.run_until_complete
        benchmark.pedantic(lambda: run(work()), rounds=rounds, warmup_rounds=2)

    def close(self) -> None:
        try:
            self.setup(self._stack.aclose())
            if self._owns_loop:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            if self._owns_loop:
                self.loop.close()


@contextlib.asynccontextmanager
async def _uvicorn(app: Any, rpc: Any) -> AsyncIterator[None]:
    """uvicorn serving ``app`` in the running loop on 127.0.0.1:<free port>; ``rpc.url`` is set to its URL."""
    import uvicorn

    class InLoop(uvicorn.Server):
        def capture_signals(self) -> Any:  # pytest keeps its own SIGINT handler
            return contextlib.nullcontext()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    rpc.url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws_ping_interval=None, timeout_graceful_shutdown=5, backlog=2048
    )
    server = InLoop(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        for _ in range(int(SETUP_TIMEOUT / 0.01)):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="module")
def loopback(twin: Any) -> Iterator[Loopback]:
    """The module's loop, servers and clients (made by the module's own fixture), for one twin."""
    rig = Loopback()
    try:
        yield rig
    finally:
        rig.close()


# ---------------------------------------------------------------- --slow-call-path
def _call_time(speedups: Any) -> float:
    """Seconds per call on memory_pair with this twin: the best of five batches."""
    from fastwsrpc import RpcMethodsBase
    from fastwsrpc.testing import channel_pair

    class Adder(RpcMethodsBase):
        async def add(self, a: int, b: int) -> int:
            return a + b

    async def measure() -> float:
        best = float("inf")
        async with channel_pair(Adder(), speedups=speedups) as (_, client):
            for i in range(300):
                await client.other.add(a=i, b=1)
            for _ in range(5):
                start = time.process_time()  # CPU time, as the end-to-end benchmarks are timed
                for i in range(1000):
                    await client.other.add(a=i, b=1)
                best = min(best, (time.process_time() - start) / 1000)
        return best

    loop = new_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(measure(), SETUP_TIMEOUT))
    finally:
        loop.close()


def _slowed(decode: Callable[..., Any], extra: float) -> Callable[..., Any]:
    clock = time.process_time  # busy work: CPU time, whatever else the machine runs

    def decode_slowly(*args: Any) -> Any:
        message = decode(*args)
        until = clock() + extra
        while clock() < until:
            pass
        return message

    return decode_slowly


@pytest.fixture(scope="session", autouse=True)
def slow_call_path(request: Any) -> Iterator[None]:
    percent = request.config.getoption("--slow-call-path")
    if not percent:
        yield
        return
    report: List[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for name, module in _twins().items():
            per_call = _call_time(module)
            extra = per_call * percent / 100 / 2  # two decodes per call
            patch.setattr(module, "decode", _slowed(module.decode, extra))
            report.append(
                f"{name}: a call on memory_pair took {per_call * 1e6:.1f} us; "
                f"+{extra * 1e6:.2f} us per decode -> {_call_time(module) * 1e6:.1f} us"
            )
        request.config.stash[_SLOWED] = report
        yield


_SLOWED = pytest.StashKey[List[str]]()


def pytest_terminal_summary(terminalreporter: Any, config: Any) -> None:
    report: Optional[List[str]] = config.stash.get(_SLOWED, None)
    if report:
        terminalreporter.section("--slow-call-path (this session only)")
        for line in report:
            terminalreporter.write_line(line)


def pytest_benchmark_update_machine_info(config: Any, machine_info: Dict[str, Any]) -> None:
    # Only what must match for a comparison to mean anything: pytest-benchmark warns
    # when a baseline's machine_info differs (so nothing that changes run to run).
    machine_info["fastwsrpc"] = {"twins": sorted(_twins()), "event_loop": _loop_name()}


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover
        return "asyncio"
    return "uvloop"
