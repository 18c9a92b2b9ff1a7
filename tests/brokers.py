"""Support of the cluster tests: real Redis and NATS servers, and in-process nodes.

Servers: real Redis and NATS, on free loopback ports.

Each server runs from its Debian package's binary (``redis-server``,
``nats-server``) in a temporary directory, listens on 127.0.0.1 only, is ready
when a client handshake succeeds (a bounded loop, no fixed sleep) and is stopped
by its PID. ``restart()`` stops it and starts it again on the same port: what a
broker outage looks like to the nodes.

Missing binaries (or the ``redis`` / ``nats-py`` extras) skip the tests with a
message saying how to install them, unless ``FASTWSRPC_REQUIRE_BROKERS=1`` (CI sets
it), in which case they fail: a suite that silently skips its brokers proves nothing.

Nodes: a :class:`Node` is a :class:`~fastwsrpc.cluster.Cluster` plus the part of the
endpoint that matters to it: each ``connect`` builds a server-side
:class:`~fastwsrpc.channel.RpcChannel` and a client-side one joined in memory,
attaches the server side under a client id, and detaches it when the connection
ends, as ``WebSocketRpcEndpoint`` does around ``main_loop``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator, List, Optional, Set

import pytest

from fastwsrpc import RpcMethodsBase
from fastwsrpc.channel import RpcChannel
from fastwsrpc.cluster import Cluster
from fastwsrpc.transport import TransportClosed

INSTALL_HINT = "apt-get install redis-server nats-server"
EXTRAS_HINT = "pip install -e '.[redis,nats]'"
REQUIRE = os.environ.get("FASTWSRPC_REQUIRE_BROKERS") == "1"


def unavailable(message: str) -> None:
    """Skip (locally) or fail (``FASTWSRPC_REQUIRE_BROKERS=1``) for a missing broker."""
    if REQUIRE:
        pytest.fail(f"{message} (FASTWSRPC_REQUIRE_BROKERS=1 forbids skipping)", pytrace=False)
    pytest.skip(message)


def find_binary(name: str) -> Optional[str]:
    # Debian puts nats-server in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/usr/local/bin/{name}") if os.access(p, os.X_OK)),
        None,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerServer:
    """A broker process: ``start``, ``stop`` (by PID), ``restart`` on the same port."""

    kind = ""
    binary = ""
    extra_module = ""

    def __init__(self) -> None:
        path = find_binary(self.binary)
        if path is None:
            unavailable(f"{self.binary} not found: {INSTALL_HINT}")
        if importlib.util.find_spec(self.extra_module) is None:
            unavailable(f"the Python package {self.extra_module!r} is missing: {EXTRAS_HINT}")
        self.path: str = path or ""
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"fastwsrpc-{self.kind}-")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log = open(os.path.join(self.dir, "server.log"), "ab")

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> List[str]:
        raise NotImplementedError

    def ready(self, sock: socket.socket) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> BrokerServer:
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}; see {self.dir}/server.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.settimeout(1.0)
                    if self.ready(sock):
                        return self
            except OSError:
                pass
            time.sleep(0.02)  # polling interval of a bounded readiness loop, not a wait for an event
        self.stop()
        raise RuntimeError(f"{self.binary} did not become ready on port {self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(BrokerServer):
    kind = "redis"
    binary = "redis-server"
    extra_module = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> List[str]:
        return [
            self.path,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--daemonize",
            "no",
            "--maxclients",
            "4000",
        ]

    def ready(self, sock: socket.socket) -> bool:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class NatsServer(BrokerServer):
    kind = "nats"
    binary = "nats-server"
    extra_module = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> List[str]:
        # JetStream on (topic history), its store in the server's directory: a restart
        # on the same port keeps the history, as a real deployment's would.
        return [self.path, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", os.path.join(self.dir, "js")]

    def ready(self, sock: socket.socket) -> bool:
        return sock.recv(4096).startswith(b"INFO ")


def make_server(kind: str) -> BrokerServer:
    return RedisServer() if kind == "redis" else NatsServer()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[BrokerServer]:
    """One Redis for the session; tests keep apart by namespace, never restart it."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[BrokerServer]:
    """One NATS for the session; tests keep apart by namespace, never restart it."""
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture
def own_broker(request: Any) -> Iterator[BrokerServer]:
    """A broker of the test's own (``kind`` from indirect parametrisation), free to restart."""
    server = make_server(request.param).start()
    yield server
    server.close()


# ------------------------------------------------------------------ in-process nodes
class MemoryLink:
    """One end of a two-way in-memory connection (an unbounded queue each way)."""

    def __init__(self, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.closed: Optional[TransportClosed] = None
        self.close_code: Optional[int] = None
        self.close_reason = ""

    async def send(self, data: bytes) -> None:
        if self.closed is not None:
            raise self.closed
        self.outbox.put_nowait(data)

    async def receive(self) -> Any:
        item = await self.inbox.get()
        if isinstance(item, TransportClosed):
            self.closed = self.closed or item
            raise item
        return item

    def abort(self) -> None:
        if self.closed is None:
            self.close_code = 1006
            self.closed = TransportClosed(1006, "aborted")
            self.outbox.put_nowait(self.closed)
            self.inbox.put_nowait(self.closed)

    @property
    def peer(self) -> str:
        return "memory"

    def receiving(self) -> bool:
        return False

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.close_code, self.close_reason = code, reason
            self.closed = TransportClosed(code, reason)
            self.outbox.put_nowait(TransportClosed(code, reason))
            self.inbox.put_nowait(TransportClosed(code, reason))


class ClientMethods(RpcMethodsBase):
    """What a test client exposes; ``log`` is shared by the copies of one client."""

    def __init__(self, name: str, log: Optional[List[Any]] = None) -> None:
        super().__init__()
        self.name = name
        self.log: List[Any] = log if log is not None else []
        self.cancelled: List[str] = []

    async def whoami(self) -> str:
        return self.name

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def fail(self) -> None:
        raise ValueError("secret")

    async def fail_with(self, code: int, message: str, data: Any = None) -> None:
        from fastwsrpc import RemoteValueError

        raise RemoteValueError(message, code=code, data=data)

    async def hear(self, text: Any = None) -> None:
        self.log.append(text)

    async def sleep(self, seconds: float, key: str = "") -> str:
        self.log.append(("sleeping", key))
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.log.append(("cancelled", key))
            raise
        return "slept"

    async def ask_server(self, method: str, params: Any = None) -> Any:
        """Call back into the server this client is connected to (for nesting tests)."""
        assert self.channel is not None
        return (await self.channel.call(method, params)).result


class ServerMethods(RpcMethodsBase):
    """What the server side of a node exposes: routing through its own cluster."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster

    async def call_client(self, client_id: str, method: str, params: Any = None) -> Any:
        return (await self.cluster.call(client_id, method, params)).result


class Connection:
    def __init__(self, client_id: str, server: RpcChannel, client: RpcChannel, methods: ClientMethods) -> None:
        self.client_id = client_id
        self.server = server
        self.client = client
        self.methods = methods
        self.tasks: List[asyncio.Task[Any]] = []

    @property
    def log(self) -> List[Any]:
        return self.methods.log

    @property
    def server_link(self) -> MemoryLink:
        link = self.server.socket
        assert isinstance(link, MemoryLink)
        return link

    async def close(self) -> None:
        await self.client.close()
        await self.server.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Node:
    """A cluster node in this process, with its connections."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.connections: Set[Connection] = set()

    async def connect(self, client_id: str, attach: bool = True) -> Connection:
        up: asyncio.Queue[Any] = asyncio.Queue[Any]()
        down: asyncio.Queue[Any] = asyncio.Queue[Any]()
        methods = ClientMethods(client_id)
        server = RpcChannel(ServerMethods(self.cluster), MemoryLink(up, down))
        client = RpcChannel(methods, MemoryLink(down, up))
        conn = Connection(client_id, server, client, methods)  # the channel's copy shares ``log``
        if attach:
            await self.cluster.attach(client_id, server)
        conn.tasks = [asyncio.ensure_future(self._serve(conn, attach)), asyncio.ensure_future(client.run())]
        self.connections.add(conn)
        return conn

    async def _serve(self, conn: Connection, attached: bool) -> None:
        try:
            await conn.server.run()
        finally:
            if attached:
                await self.cluster.detach(conn.client_id, conn.server)

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.close()
        await self.cluster.close()


async def eventually(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` (sync or async) until true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def bounded(awaitable: Any, timeout: float = 20.0) -> Any:
    """Await with an upper bound, so that a bug shows as a failure rather than a hung suite."""
    return await asyncio.wait_for(awaitable, timeout)
