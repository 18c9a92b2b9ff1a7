"""Side-by-side throughput of fastwsrpc against its peer and the raw floor, in one run.

    python benchmarks/compare.py [--quick] [--only NAME ...] [--uvicorn-ws websockets]

Contenders, each server in its own process on a free 127.0.0.1 port, each driven
by a client process of its own (so the client side runs the same implementation):

* ``fastwsrpc[cython]`` and ``fastwsrpc[python]``: this library, compiled and pure;
* ``native[cython]``, ``native[python]``: the native server and client (no ASGI);
  ``native+deflate[cython]``: the same with permessage-deflate agreed (the client
  offers ``compression="deflate"``; messages from 1 KiB on are deflated both ways);
* ``fastapi-ws-rpc``: the 1.2 package (``pip install --no-deps fastapi-ws-rpc==1.2.0``);
* ``raw``: the floor. A FastAPI endpoint that orjson-decodes each JSON-RPC frame and
  answers it, driven by a plain ``websockets`` client that pipelines frames.

``--cluster`` runs the scale-out figures instead (``fastwsrpc.cluster``; needs
``redis-server`` and ``nats-server`` on the machine, started here on free loopback
ports): 50 clients against one server process and against two sharing a Redis
broker (aggregate calls/s and the servers' CPU per call, from /proc); a call routed
across nodes against the same call on one node, on Redis and on NATS (p50 latency,
and calls/s with 64 in flight); a broadcast to 1,000 connections over two nodes
(time until the last one has it).

Within one contender's run, calls/s in flight and notifications/s are each the
median of three tries: on two cores the two processes either overlap or fall
into taking turns, and one try can land either way. The whole field then runs
``--rounds`` times (3 by default, every other round in reverse order), each
contender next to the floor it is measured against. The table gives each
figure's median over the rounds; a ratio is the median of the ratios of the
pair *within* each round, with the lowest and highest beside it. On a shared
machine whose speed drifts by 2x over minutes, a pair run seconds apart says
more than two medians taken from different minutes.

Every loop is bounded in count and time; servers are stopped by pid at the end.
Absolute numbers drift on shared machines: read the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

# At module level: FastAPI resolves the endpoint's string annotations here.
from fastapi import WebSocket, WebSocketDisconnect

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: In running order: each contender runs next to the floor it is measured against.
CONTENDERS = [
    "floor-picows",
    "native[cython]",
    "native+deflate[cython]",
    "native[python]",
    "floor-websockets",
    "raw",
    "fastwsrpc[cython]",
    "fastwsrpc[python]",
    "fastapi-ws-rpc",
]
#: The ratios printed, each mine against other.
PAIRS = [
    ("native[cython]", "floor-picows"),
    ("native[cython]", "floor-websockets"),
    ("native[cython]", "native[python]"),
    ("native+deflate[cython]", "native[cython]"),
    ("fastwsrpc[cython]", "raw"),
    ("fastwsrpc[cython]", "fastapi-ws-rpc"),
    ("fastwsrpc[cython]", "fastwsrpc[python]"),
]
#: Contenders whose client is the raw pipelining driver (no RPC library on the client side).
RAW_DRIVEN = ("raw", "floor-websockets", "floor-picows")
MIB = 1024 * 1024


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))


def _env(name: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("FASTWSRPC_NO_EXTENSIONS", None)
    env.pop("FASTWSRPC_REQUIRE_EXTENSIONS", None)
    if name in ("fastwsrpc[cython]", "native[cython]", "native+deflate[cython]"):
        env["FASTWSRPC_REQUIRE_EXTENSIONS"] = "1"
    elif name in ("fastwsrpc[python]", "native[python]"):
        env["FASTWSRPC_NO_EXTENSIONS"] = "1"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------- servers
def make_app(kind: str) -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    state = {"notes": 0}

    if kind == "raw":
        import orjson

        @app.websocket("/ws")
        async def raw(ws: WebSocket) -> None:
            await ws.accept()
            try:
                while True:
                    msg = orjson.loads(await ws.receive_text())
                    method, params = msg["method"], msg.get("params") or {}
                    if method == "note":
                        state["notes"] += 1
                        continue
                    if method == "add":
                        result: Any = params["a"] + params["b"]
                    elif method == "echo":
                        result = params["text"]
                    else:
                        result = state["notes"]
                    await ws.send_text(orjson.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).decode())
            except WebSocketDisconnect:
                pass

        return app

    if kind == "fastapi-ws-rpc":
        import fastapi_ws_rpc as lib
    else:
        import fastwsrpc as lib  # type: ignore[no-redef]

    kwargs: Dict[str, Any] = {"max_pending_requests": 100_000}
    if kind == "fastapi-ws-rpc":
        kwargs["max_message_size"] = 16 * MIB
    lib.WebSocketRpcEndpoint(make_methods(lib, state), **kwargs).register_route(app, "/ws")
    return app


def make_methods(lib: Any, state: Dict[str, int]) -> Any:
    """The benchmark's methods, for any library with ``RpcMethodsBase``."""

    class Methods(lib.RpcMethodsBase):  # type: ignore[misc,name-defined]
        async def add(self, a: int, b: int) -> int:
            return a + b

        async def echo(self, text: str) -> str:
            return text

        async def note(self) -> None:
            state["notes"] += 1

        async def notes(self) -> int:
            return state["notes"]

        async def call_me(self, n: int, in_flight: int) -> float:
            """Server-to-client calls: n calls of the client's ``add``, in_flight at a time."""
            channel = self.channel
            start = time.perf_counter()
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    await channel.other.add(a=i, b=1)

            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return time.perf_counter() - start

    return Methods()


def _bare_answer(state: Dict[str, int], raw: Any) -> Optional[bytes]:
    """The floors' dispatcher: orjson in, one dict lookup, orjson out (``None`` for a notification)."""
    import orjson

    msg = orjson.loads(raw)
    method, params = msg["method"], msg.get("params") or {}
    if method == "note":
        state["notes"] += 1
        return None
    if method == "add":
        result: Any = params["a"] + params["b"]
    elif method == "echo":
        result = params["text"]
    else:
        result = state["notes"]
    return orjson.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result})


async def serve_floor_websockets(port: int) -> None:
    """``websockets``' own asyncio server with the bare dispatcher."""
    from websockets.asyncio.server import serve as ws_serve

    state = {"notes": 0}

    async def handler(ws: Any) -> None:
        try:
            while True:
                answer = _bare_answer(state, await ws.recv(decode=False))
                if answer is not None:
                    await ws.send(answer.decode())
        except Exception:
            pass

    async with ws_serve(handler, "127.0.0.1", port, max_size=None, compression=None, backlog=4096):
        await asyncio.get_running_loop().create_future()


async def serve_floor_picows(port: int) -> None:
    """picows with the bare dispatcher: the practical limit of Python here."""
    from picows import WSListener, WSMsgType, ws_create_server

    state = {"notes": 0}

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                answer = _bare_answer(state, frame.get_payload_as_memoryview())
                if answer is not None:
                    transport.send(WSMsgType.TEXT, answer)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(lambda _: Listener(), "127.0.0.1", port, max_frame_size=16 * MIB, backlog=4096)
    async with server:
        await server.serve_forever()


async def serve_native(port: int) -> None:
    """fastwsrpc's native server (no ASGI)."""
    import fastwsrpc
    from fastwsrpc.server import WebSocketRpcServer

    server = WebSocketRpcServer(
        make_methods(fastwsrpc, {"notes": 0}), max_pending_requests=100_000, max_message_size=16 * MIB
    )
    await server.serve("127.0.0.1", port, backlog=4096)


class _PicowsConn:
    """A picows client connection with the ``send`` / ``recv`` of the raw driver."""

    def __init__(self) -> None:
        from collections import deque

        self.messages: Any = deque()
        self.waiter: Optional[asyncio.Future[None]] = None
        self.transport: Any = None

    async def send(self, text: str) -> None:
        from picows import WSMsgType

        self.transport.send(WSMsgType.TEXT, text.encode())

    async def recv(self) -> bytes:
        if not self.messages:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return bytes(self.messages.popleft())

    async def close(self) -> None:
        self.transport.send_close()
        self.transport.disconnect()


async def _picows_connect(url: str) -> _PicowsConn:
    from picows import WSListener, WSMsgType, ws_connect

    conn = _PicowsConn()

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                conn.messages.append(frame.get_payload_as_bytes())
                if conn.waiter is not None and not conn.waiter.done():
                    conn.waiter.set_result(None)

    transport, _ = await ws_connect(lambda: Listener(), url, max_frame_size=16 * MIB)
    conn.transport = transport
    return conn


def serve(kind: str, port: int, ws_impl: str) -> None:
    import uvicorn

    _raise_fd_limit()
    asyncio_servers = {"floor-websockets": serve_floor_websockets, "floor-picows": serve_floor_picows}
    if kind in asyncio_servers or kind.startswith("native"):
        import uvloop

        uvloop.run(asyncio_servers.get(kind, serve_native)(port))
        return
    loop = "uvloop"
    try:
        import uvloop
    except ImportError:
        loop = "asyncio"
    uvicorn.run(
        make_app(kind),
        host="127.0.0.1",
        port=port,
        log_level="error",
        loop=loop,
        ws=ws_impl,
        ws_max_size=16 * MIB,
        lifespan="off",
        backlog=4096,
    )


# ---------------------------------------------------------------- drivers
class Driver:
    """What each figure needs from a contender's client."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    async def open(self) -> Any:
        if self.kind == "floor-picows":
            return await _picows_connect(self.url)
        if self.kind in RAW_DRIVEN:
            from websockets.asyncio.client import connect

            return await connect(self.url, max_size=None, compression=None)
        if self.kind == "fastapi-ws-rpc":
            import fastapi_ws_rpc as lib

            config = lib.WebSocketRpcClientConfig(
                retry=lib.RpcRetryConfig(enabled=False),
                backpressure=lib.RpcBackpressureConfig(max_pending_requests=100_000, max_message_size=16 * MIB),
                websocket=lib.WebSocketConnectionConfig(compression=None),
                websocket_kwargs={"max_size": None},
            )
            client = lib.WebSocketRpcClient(self.url, ClientMethodsFor(lib), config=config)
        else:
            import fastwsrpc as lib  # type: ignore[no-redef]

            client = lib.WebSocketRpcClient(
                self.url,
                ClientMethodsFor(lib),
                retry_config=False,
                max_pending_requests=100_000,
                max_message_size=16 * MIB,
                compression="deflate" if "deflate" in self.kind else None,
            )
        return await client.__aenter__()

    async def close(self, conn: Any) -> None:
        if self.kind in RAW_DRIVEN:
            await conn.close()
        else:
            await conn.__aexit__(None, None, None)

    async def call(self, conn: Any, method: str, **params: Any) -> Any:
        """One call; the raw floor does it by hand (no pipelining here)."""
        if self.kind in RAW_DRIVEN:
            await conn.send(json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
            return json.loads(await conn.recv())["result"]
        return (await getattr(conn.other, method)(**params)).result

    async def in_flight(self, conn: Any, n: int, window: int) -> None:
        """n calls of add, ``window`` outstanding at any time."""
        if self.kind in RAW_DRIVEN:
            import orjson

            sent = 0

            def frame(i: int) -> str:
                return orjson.dumps({"jsonrpc": "2.0", "method": "add", "params": {"a": i, "b": 1}, "id": i}).decode()

            for _ in range(min(window, n)):
                await conn.send(frame(sent))
                sent += 1
            for _ in range(n):
                await conn.recv()
                if sent < n:
                    await conn.send(frame(sent))
                    sent += 1
            return
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                await conn.other.add(a=i, b=1)

        await asyncio.gather(*(worker() for _ in range(window)))

    async def notify(self, conn: Any, n: int) -> None:
        if self.kind in RAW_DRIVEN:
            frame = json.dumps({"jsonrpc": "2.0", "method": "note"})
            for _ in range(n):
                await conn.send(frame)
        else:
            for _ in range(n):
                await conn.channel.notify("note")


def ClientMethodsFor(lib: Any) -> Any:
    class ClientMethods(lib.RpcMethodsBase):  # type: ignore[misc,name-defined]
        async def add(self, a: int, b: int) -> int:
            return a + b

    return ClientMethods()


async def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def drive(
    kind: str, url: str, quick: bool, server_pid: int, figures: Optional[List[str]] = None
) -> Dict[str, Any]:
    _raise_fd_limit()
    d = Driver(kind, url)
    scale = 0.25 if quick else 1.0
    out: Dict[str, Any] = {}

    def want(*keys: str) -> bool:
        return figures is None or any(k in figures for k in keys)

    conn = await d.open()
    try:
        for _ in range(200):  # warm up
            await d.call(conn, "add", a=1, b=2)

        n = int(3000 * scale)
        lat: List[float] = []
        for i in range(n if want("seq_calls_s", "seq_p50_us", "seq_p99_us") else 0):
            t0 = time.perf_counter()
            await d.call(conn, "add", a=i, b=1)
            lat.append(time.perf_counter() - t0)
        if lat:
            out["seq_calls_s"] = n / sum(lat)
            q = statistics.quantiles(lat, n=100)
            out["seq_p50_us"], out["seq_p99_us"] = q[49] * 1e6, q[98] * 1e6

        # Pipelined figures are bimodal on two cores: the two processes either
        # overlap or fall into taking turns, and one round can land either way.
        # Each is the median of three rounds of a third of the calls.
        for window in (64, 512):
            if not want(f"inflight{window}_calls_s"):
                continue
            n = int(10_000 * scale)
            rounds = [n / await _timed(lambda w=window, n=n: d.in_flight(conn, n, w)) for _ in range(3)]
            out[f"inflight{window}_calls_s"] = statistics.median(rounds)

        n = int(20_000 * scale)
        notify_rounds = []
        for _ in range(3 if want("notify_s") else 0):
            base = await d.call(conn, "notes")
            t0 = time.perf_counter()
            await d.notify(conn, n)
            deadline = t0 + 60
            while await d.call(conn, "notes") < base + n and time.perf_counter() < deadline:
                await asyncio.sleep(0.001)
            notify_rounds.append(n / (time.perf_counter() - t0))
        if notify_rounds:
            out["notify_s"] = statistics.median(notify_rounds)

        if want("echo_1mib_MB_s"):
            payload = "x" * MIB
            n = max(5, int(40 * scale))
            await _seq_echo(d, conn, payload, 2)  # warm up: buffers of this size
            out["echo_1mib_MB_s"] = n * 2 * MIB / 1e6 / await _timed(lambda: _seq_echo(d, conn, payload, n))

        if kind.startswith(("fastwsrpc", "native")) and want("s2c_calls_s"):
            n = int(20_000 * scale)
            elapsed = await d.call(conn, "call_me", n=n, in_flight=64)
            out["s2c_calls_s"] = n / elapsed
    finally:
        await d.close(conn)
    clients = [await d.open() for _ in range(50 if want("clients50_calls_s") else 0)]
    try:
        per = int(400 * scale)

        async def one(c: Any) -> None:
            for i in range(per):
                await d.call(c, "add", a=i, b=1)

        if clients:
            out["clients50_calls_s"] = 50 * per / await _timed(lambda: asyncio.gather(*(one(c) for c in clients)))
    finally:
        await asyncio.gather(*(d.close(c) for c in clients))
    if not want("idle1000_rss_MB"):
        return out

    from websockets.asyncio.client import connect

    await asyncio.sleep(0.5)
    before = _rss(server_pid)
    idle = []
    compression = "deflate" if "deflate" in kind else None  # agreed, and idle: no zlib state on the server
    try:
        for _ in range(1000):
            # offered: fastapi-ws-rpc's server answers it even when it was not offered
            idle.append(await connect(url, compression=compression, subprotocols=["jsonrpc2.0"]))
        await asyncio.sleep(1.0)
        out["idle1000_rss_MB"] = (_rss(server_pid) - before) / 1e6
    finally:
        await asyncio.gather(*(c.close() for c in idle), return_exceptions=True)
    return out


async def _seq_echo(d: Driver, conn: Any, payload: str, n: int) -> None:
    for _ in range(n):
        assert len(await d.call(conn, "echo", text=payload)) == len(payload)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- orchestration
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def run_contender(
    kind: str, quick: bool, ws_impl: str, figures: Optional[List[str]] = None
) -> Optional[Dict[str, Any]]:
    port = _free_port()
    env = _env(kind)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--uvicorn-ws", ws_impl], env=env
    )
    try:
        _wait_port(port, server)
        cmd = [sys.executable, __file__, "--drive", kind, "--port", str(port), "--server-pid", str(server.pid)]
        if quick:
            cmd.append("--quick")
        if figures:
            cmd += ["--figures", *figures]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(f"{kind}: driver failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


# ---------------------------------------------------------------- cluster (--cluster)
def make_cluster_app(broker_url: str) -> Any:
    """A node: ``/ws/{client_id}`` attached to a Cluster on ``broker_url``; ``add`` and routing methods."""
    from fastapi import FastAPI

    import fastwsrpc as lib
    from fastwsrpc.cluster import Cluster, broker_from_url

    cluster = Cluster(broker_from_url(broker_url))

    class Methods(lib.RpcMethodsBase):  # type: ignore[misc,name-defined]
        async def add(self, a: int, b: int) -> int:
            return a + b

        async def route(self, client_id: str, a: int, b: int) -> Any:
            return (await cluster.call(client_id, "add", {"a": a, "b": b})).result

        async def broadcast(self, text: str) -> None:
            await cluster.broadcast("hear", [text])

        async def count(self) -> int:
            return len(await cluster.clients())

    endpoint = lib.WebSocketRpcEndpoint(Methods(), cluster=cluster, max_pending_requests=100_000)
    app = FastAPI()
    endpoint.register_route(app, "/ws/{client_id}")

    return app


def serve_cluster(broker_url: str, port: int, ws_impl: str) -> None:
    import uvicorn

    _raise_fd_limit()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run(
        make_cluster_app(broker_url),
        host="127.0.0.1",
        port=port,
        log_level="error",
        loop=loop,
        ws=ws_impl,
        lifespan="off",
        backlog=4096,
    )


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Adder:
    """What a benchmark client exposes: ``add`` (the routed calls' target) and ``hear``."""

    def __init__(self, lib: Any) -> None:
        class Methods(lib.RpcMethodsBase):  # type: ignore[misc,name-defined]
            async def add(self, a: int, b: int) -> int:
                return a + b

        self.methods = Methods()


async def _client(url: str) -> Any:
    import fastwsrpc as lib

    client = lib.WebSocketRpcClient(url, _Adder(lib).methods, retry_config=False, max_pending_requests=100_000)
    return await client.__aenter__()


async def drive_cluster(ports: List[int], pids: List[int], quick: bool, what: str) -> Dict[str, Any]:
    """The client side of one cluster figure, in a process of its own."""
    _raise_fd_limit()
    scale = 0.25 if quick else 1.0
    out: Dict[str, Any] = {}
    urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
    if what == "clients50":
        clients = [await _client(f"{urls[i % len(urls)]}/c{i}") for i in range(50)]
        per = int(400 * scale)
        try:
            for c in clients:
                await c.other.add(a=1, b=1)  # warm up
            cpu0 = sum(_cpu_seconds(p) for p in pids)

            async def one(c: Any) -> None:
                for i in range(per):
                    await c.other.add(a=i, b=1)

            elapsed = await _timed(lambda: asyncio.gather(*(one(c) for c in clients)))
            cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
            out["calls_s"] = 50 * per / elapsed
            out["cpu_us_per_call"] = cpu / (50 * per) * 1e6
        finally:
            await asyncio.gather(*(c.__aexit__(None, None, None) for c in clients))
    elif what == "routed":
        # The target client on node 1; callers on node 0 (cross-node) and on node 1 (same node).
        target = await _client(f"{urls[1]}/target")
        cross = await _client(f"{urls[0]}/caller-cross")
        same = await _client(f"{urls[1]}/caller-same")
        try:
            deadline = time.monotonic() + 30
            while (await cross.other.count()).result < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for name, caller in (("cross", cross), ("same", same)):
                for i in range(200):
                    await caller.other.route(client_id="target", a=i, b=1)  # warm up
                n = int(2000 * scale)
                lat = []
                for i in range(n):
                    t0 = time.perf_counter()
                    await caller.other.route(client_id="target", a=i, b=1)
                    lat.append(time.perf_counter() - t0)
                q = statistics.quantiles(lat, n=100)
                out[f"{name}_p50_us"], out[f"{name}_p99_us"] = q[49] * 1e6, q[98] * 1e6
                n = int(10_000 * scale)
                todo = iter(range(n))

                async def worker(c: Any = caller, todo: Any = todo) -> None:
                    for i in todo:
                        await c.other.route(client_id="target", a=i, b=1)

                out[f"{name}_inflight64_calls_s"] = n / await _timed(
                    lambda: asyncio.gather(*(worker() for _ in range(64)))
                )
        finally:
            for c in (target, cross, same):
                await c.__aexit__(None, None, None)
    elif what == "broadcast":
        from websockets.asyncio.client import connect

        control = await _client(f"{urls[0]}/control")
        conns = []
        try:
            for i in range(1000):
                conns.append(await connect(f"{urls[i % 2]}/b{i}", compression=None))
            deadline = time.monotonic() + 60
            while (await control.other.count()).result < 1001 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            runs = []
            for r in range(3):
                t0 = time.perf_counter()
                await control.other.broadcast(text=f"r{r}")
                await asyncio.gather(*(c.recv() for c in conns))
                runs.append(time.perf_counter() - t0)
            out["broadcast1000_ms"] = statistics.median(runs) * 1e3
        finally:
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
            await control.__aexit__(None, None, None)
    return out


# ---------------------------------------------------------------- broker floor (--cluster)
#: What one routed call puts on the broker each way, about: a routing header and a JSON-RPC frame.
_FLOOR_PAYLOAD = (
    b'{"k":"q","r":1,"f":"0123456789abcdef0123456789abcdef"}\n'
    b'{"op":"call","c":"target","f":"0123456789abcdef0123456789abcdef","i":1}\n'
    b'{"jsonrpc":"2.0","method":"add","params":{"a":1,"b":1},"id":1}'
)


async def floor_answer(kind: str, url: str, prefix: str) -> None:
    """The far side of the floor: every message on ``{prefix}.req`` goes straight back on
    ``{prefix}.rep``, with the broker's own client and nothing else (runs until killed)."""
    if kind == "redis":
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(url)
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"{prefix}.req")
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None:
                await r.publish(f"{prefix}.rep", message["data"])
    else:
        import nats

        nc = await nats.connect(url)

        async def answer(msg: Any) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(f"{prefix}.req", cb=answer)
        await nc.flush()
        await asyncio.get_running_loop().create_future()


async def drive_floor(kind: str, url: str, prefix: str, quick: bool) -> Dict[str, Any]:
    """The near side: the latency of a message out through the broker and back (two broker
    trips, as a routed call's request and answer), measured with the broker's own client.

    Redis: PUBLISH on one connection, the answer read off a subscription on another (and
    so on the far side); NATS: nats-py's request/reply. Both sides run in processes of
    their own on uvloop, as the nodes do.
    """
    n = int(2000 * (0.25 if quick else 1.0))
    lat: List[float] = []
    if kind == "redis":
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(url)
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"{prefix}.rep")

        async def trip() -> None:
            await r.publish(f"{prefix}.req", _FLOOR_PAYLOAD)
            for _ in range(1000):  # bounded: only our answer comes on this channel
                if await pubsub.get_message(ignore_subscribe_messages=True, timeout=None) is not None:
                    return
            raise RuntimeError("no answer on the floor channel")

        deadline = time.monotonic() + 30
        while not await r.publish(f"{prefix}.req", b"ping"):  # until the far side listens
            if time.monotonic() > deadline:
                raise RuntimeError("the floor's far side did not subscribe")
            await asyncio.sleep(0.05)
        await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
    else:
        import nats

        nc = await nats.connect(url)

        async def trip() -> None:
            await nc.request(f"{prefix}.req", _FLOOR_PAYLOAD, timeout=5)

        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.request(f"{prefix}.req", b"ping", timeout=5)
                break
            except nats.errors.NoRespondersError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    for _ in range(200):  # warm up
        await trip()
    for _ in range(n):
        t0 = time.perf_counter()
        await trip()
        lat.append(time.perf_counter() - t0)
    q = statistics.quantiles(lat, n=100)
    return {"floor_p50_us": q[49] * 1e6, "floor_p99_us": q[98] * 1e6}


def run_floor(kind: str, broker_url: str, quick: bool) -> Dict[str, Any]:
    """Both sides of the floor, each in a process of its own (stopped by pid)."""
    env = _env("fastwsrpc[cython]")
    prefix = f"floor{os.getpid()}x{time.monotonic_ns()}"
    far = subprocess.Popen([sys.executable, __file__, "--floor-answer", kind, broker_url, prefix], env=env)
    try:
        cmd = [sys.executable, __file__, "--floor-drive", kind, broker_url, prefix] + (["--quick"] if quick else [])
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"floor driver failed:\n{done.stderr[-2000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        far.send_signal(signal.SIGTERM)
        try:
            far.wait(10)
        except subprocess.TimeoutExpired:
            far.kill()


def _start_broker(kind: str) -> Any:
    """redis-server or nats-server on a free loopback port; (process, url)."""
    import shutil
    import tempfile

    name = "redis-server" if kind == "redis" else "nats-server"
    binary = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        raise SystemExit(f"{name} not found: apt-get install redis-server nats-server")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix=f"fastwsrpc-bench-{kind}-")
    if kind == "redis":
        cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir]
        url = f"redis://127.0.0.1:{port}/0"
    else:
        cmd = [binary, "-a", "127.0.0.1", "-p", str(port)]
        url = f"nats://127.0.0.1:{port}"
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port, proc)
    return proc, url


def run_cluster_figure(broker_url: str, nodes: int, what: str, quick: bool, ws_impl: str) -> Dict[str, Any]:
    env = _env("fastwsrpc[cython]")
    ports = [_free_port() for _ in range(nodes)]
    servers = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve-cluster", broker_url, "--port", str(p), "--uvicorn-ws", ws_impl],
            env=env,
        )
        for p in ports
    ]
    try:
        for p, s in zip(ports, servers):
            _wait_port(p, s)
        cmd = [sys.executable, __file__, "--drive-cluster", what, "--ports", *map(str, ports)]
        cmd += ["--pids", *(str(s.pid) for s in servers)] + (["--quick"] if quick else [])
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"cluster driver failed:\n{done.stderr[-2000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        for s in servers:
            s.send_signal(signal.SIGTERM)
        for s in servers:
            try:
                s.wait(10)
            except subprocess.TimeoutExpired:
                s.kill()


#: The scale-out figures, each run on its own with ``--cluster-figures``.
CLUSTER_FIGURES = ("workers", "routed", "broadcast")


def run_cluster(
    quick: bool,
    ws_impl: str,
    rounds: int = 1,
    figures: Optional[List[str]] = None,
    kinds: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """The scale-out figures. Routed calls run ``rounds`` times per broker, each round
    next to the broker's floor (the order swapped every other round): the difference of
    cross-node call and floor is taken within each round, on a machine whose speed drifts."""
    wanted = figures or list(CLUSTER_FIGURES)
    brokers = {kind: _start_broker(kind) for kind in ("redis", "nats")}
    results: Dict[str, Any] = {}
    try:
        redis_url, nats_url = brokers["redis"][1], brokers["nats"][1]
        if "workers" in wanted:
            print("cluster: 50 clients, 1 and 2 workers ...", flush=True)
            results["workers1"] = run_cluster_figure(redis_url, 1, "clients50", quick, ws_impl)
            results["workers2"] = run_cluster_figure(redis_url, 2, "clients50", quick, ws_impl)
        for kind, url in (("redis", redis_url), ("nats", nats_url)):
            if kinds and kind not in kinds:
                continue
            if "routed" in wanted:
                runs = []
                for i in range(max(1, rounds)):
                    print(f"cluster: routed calls and the broker floor on {kind}, round {i + 1} ...", flush=True)
                    pair: Dict[str, Any] = {}
                    for step in ("floor", "routed") if i % 2 == 0 else ("routed", "floor"):
                        if step == "floor":
                            pair.update(run_floor(kind, url, quick))
                        else:
                            pair.update(run_cluster_figure(url, 2, "routed", quick, ws_impl))
                    runs.append(pair)
                results[f"routed_{kind}_rounds"] = runs
                results[f"routed_{kind}"] = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
            if "broadcast" in wanted:
                print(f"cluster: broadcast to 1,000 on {kind} ...", flush=True)
                results[f"broadcast_{kind}"] = run_cluster_figure(url, 2, "broadcast", quick, ws_impl)
    finally:
        for proc, _ in brokers.values():
            proc.kill()
            proc.wait(10)
    return results


def print_cluster(r: Dict[str, Any]) -> None:
    print("\ncluster figures (fastwsrpc[cython] servers)")
    if "workers1" in r:
        w1, w2 = r["workers1"], r["workers2"]
        print(
            f"  50 clients, 1 worker:  {w1['calls_s']:,.0f} calls/s, {w1['cpu_us_per_call']:.1f} us server CPU per call"
        )
        print(
            f"  50 clients, 2 workers: {w2['calls_s']:,.0f} calls/s, {w2['cpu_us_per_call']:.1f} us server CPU per call"
        )
        print(
            f"    2 vs 1 workers: calls/s {w2['calls_s'] / w1['calls_s']:.2f}x, "
            f"CPU per call {w2['cpu_us_per_call'] / w1['cpu_us_per_call']:.2f}x"
        )
    for kind in ("redis", "nats"):
        x = r.get(f"routed_{kind}")
        if x is not None:
            runs = r[f"routed_{kind}_rounds"]
            gaps = [run["cross_p50_us"] - run["floor_p50_us"] for run in runs]
            # What the cluster adds beyond the broker's trips and the same call on one node.
            own = [run["cross_p50_us"] - run["floor_p50_us"] - run["same_p50_us"] for run in runs]
            ratios = [run["cross_inflight64_calls_s"] / run["same_inflight64_calls_s"] for run in runs]
            spread = f" [{min(gaps):.0f} to {max(gaps):.0f}]" if len(runs) > 1 else ""
            print(
                f"  routed call on {kind} (median of {len(runs)} round(s)): p50 cross-node {x['cross_p50_us']:.0f} us "
                f"(p99 {x['cross_p99_us']:.0f}) vs same-node {x['same_p50_us']:.0f} us "
                f"(p99 {x['same_p99_us']:.0f}), {x['cross_p50_us'] / x['same_p50_us']:.2f}x"
            )
            print(
                f"    broker floor (two trips, {kind}'s own client): p50 {x['floor_p50_us']:.0f} us "
                f"(p99 {x['floor_p99_us']:.0f}); cross-node p50 minus floor: "
                f"{statistics.median(gaps):.0f} us{spread}; minus the same-node call too: "
                f"{statistics.median(own):.0f} us"
            )
            spread = f" [{min(ratios):.2f}-{max(ratios):.2f}]" if len(runs) > 1 else ""
            print(
                f"    64 in flight: {x['cross_inflight64_calls_s']:,.0f} cross-node vs "
                f"{x['same_inflight64_calls_s']:,.0f} same-node calls/s, {statistics.median(ratios):.2f}x{spread}"
            )
        b = r.get(f"broadcast_{kind}")
        if b is not None:
            print(f"  broadcast to 1,000 connections over two nodes on {kind}: {b['broadcast1000_ms']:.0f} ms")


FIGURES = [
    ("seq_calls_s", "sequential calls/s", True),
    ("seq_p50_us", "sequential p50 latency (us)", False),
    ("seq_p99_us", "sequential p99 latency (us)", False),
    ("inflight64_calls_s", "calls/s, 64 in flight", True),
    ("inflight512_calls_s", "calls/s, 512 in flight", True),
    ("notify_s", "notifications/s (counted by server)", True),
    ("echo_1mib_MB_s", "1 MiB echo, MB/s (both ways)", True),
    ("s2c_calls_s", "server-to-client calls/s (64 in flight)", True),
    ("clients50_calls_s", "50 clients, aggregate calls/s", True),
    ("idle1000_rss_MB", "server RSS growth, 1000 idle conns (MB)", False),
]


def _median_figures(rounds: List[Dict[str, Dict[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """Each contender's figure: the median over the rounds it finished."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in CONTENDERS:
        runs = [r[name] for r in rounds if name in r]
        if runs:
            keys = {k for run in runs for k in run}
            out[name] = {k: statistics.median(run[k] for run in runs if k in run) for k in keys}
    return out


def _paired_ratios(rounds: List[Dict[str, Dict[str, Any]]], mine: str, other: str) -> Dict[str, List[float]]:
    """Per figure, mine / other from each round where both ran: a pair measured minutes apart, not hours."""
    out: Dict[str, List[float]] = {}
    for r in rounds:
        if mine in r and other in r:
            for key, _label, _ in FIGURES:
                a, b = r[mine].get(key), r[other].get(key)
                if a and b:
                    out.setdefault(key, []).append(a / b)
    return out


def print_table(rounds: List[Dict[str, Dict[str, Any]]]) -> None:
    results = _median_figures(rounds)
    names = [n for n in CONTENDERS if n in results]
    width = 42
    print(f"\nmedian of {len(rounds)} round(s)")
    print("figure".ljust(width) + "".join(n.rjust(20) for n in names))
    for key, label, _ in FIGURES:
        row = label.ljust(width)
        for n in names:
            v = results[n].get(key)
            row += (f"{v:,.0f}" if v is not None and v >= 100 else f"{v:,.1f}" if v is not None else "n/a").rjust(20)
        print(row)
    print("\nratios (higher is better, except latency and RSS): the median of each round's ratio, [lowest-highest]")
    for mine, other in PAIRS:
        ratios = _paired_ratios(rounds, mine, other)
        if not ratios:
            continue
        parts = []
        for key, values in ratios.items():
            spread = f" [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1 else ""
            parts.append(f"{key}={statistics.median(values):.2f}x{spread}")
        print(f"  {mine} vs {other}: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve")
    parser.add_argument("--drive")
    parser.add_argument("--port", type=int)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--quick", action="store_true", help="a quarter of the work, for a smoke run")
    parser.add_argument("--only", nargs="*", choices=CONTENDERS)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every contender (alternating order); figures are medians"
    )
    parser.add_argument("--uvicorn-ws", default="websockets-sansio", help="uvicorn's ws implementation")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--cluster", action="store_true", help="the scale-out figures (Redis and NATS) instead")
    parser.add_argument(
        "--figures",
        nargs="*",
        choices=[key for key, _label, _ in FIGURES],
        help="only these figures (all by default), e.g. --figures echo_1mib_MB_s",
    )
    parser.add_argument(
        "--cluster-figures", nargs="*", choices=CLUSTER_FIGURES, help="with --cluster: only these (all by default)"
    )
    parser.add_argument(
        "--brokers", nargs="*", choices=("redis", "nats"), help="with --cluster: routed calls and broadcasts on these"
    )
    parser.add_argument("--serve-cluster", help=argparse.SUPPRESS)
    parser.add_argument("--floor-answer", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--floor-drive", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--drive-cluster", help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--pids", type=int, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_cluster:
        serve_cluster(args.serve_cluster, args.port, args.uvicorn_ws)
        return
    if args.floor_answer or args.floor_drive:
        import uvloop

        if args.floor_answer:
            uvloop.run(floor_answer(*args.floor_answer))
            return
        kind, url, prefix = args.floor_drive
        print(json.dumps(uvloop.run(drive_floor(kind, url, prefix, args.quick))))
        return
    if args.drive_cluster:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        figures = asyncio.run(drive_cluster(args.ports, args.pids, args.quick, args.drive_cluster))
        print(json.dumps(figures))
        return
    if args.cluster:
        cluster_results = run_cluster(args.quick, args.uvicorn_ws, args.rounds, args.cluster_figures, args.brokers)
        print_cluster(cluster_results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(cluster_results, f, indent=2)
        return
    if args.serve:
        serve(args.serve, args.port, args.uvicorn_ws)
        return
    if args.drive:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        figures = asyncio.run(
            drive(args.drive, f"ws://127.0.0.1:{args.port}/ws", args.quick, args.server_pid, args.figures)
        )
        print(json.dumps(figures))
        return
    order = [n for n in CONTENDERS if n in (args.only or CONTENDERS)]
    rounds: List[Dict[str, Dict[str, Any]]] = []
    for i in range(max(1, args.rounds)):
        results: Dict[str, Dict[str, Any]] = {}
        # Every other round runs backwards: a slow drift of the machine then
        # weighs on both sides of each pair alike.
        for kind in order if i % 2 == 0 else order[::-1]:
            print(f"round {i + 1}: running {kind} ...", flush=True)
            figures = run_contender(kind, args.quick, args.uvicorn_ws, args.figures)
            if figures is not None:
                results[kind] = figures
        rounds.append(results)
    print_table(rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median": _median_figures(rounds), "rounds": rounds}, f, indent=2)


if __name__ == "__main__":
    main()
