"""Test helpers: real servers (a uvicorn thread, a process, a cuttable proxy) and memory-pair probes.

The servers are for the end-to-end tests; ``methods``/``sent``/``settled`` read
a channel's state for the conditions memory-pair tests wait on with
:func:`fastwsrpc.testing.until`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, Callable, List, Optional, Tuple, cast

import uvicorn
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState
from websockets.uri import parse_uri

from fastwsrpc import RpcChannel
from fastwsrpc.testing import MemoryTransport, until

from .app import Observed


def bound_socket(port: int = 0) -> socket.socket:
    """A TCP socket bound to 127.0.0.1 (``port`` 0: one the kernel picks), not yet listening.

    Hand it to the server as is: nothing else can take the port between the
    pick and the listen (the race of binding, closing and binding again). Until
    the server listens, a connection to it is refused, as to a server that is down.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, telling the test's thread when its startup is over (started or failed)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: Optional[List[socket.socket]] = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1:<free port> until the context exits.

    The server has its own thread and event loop, as a real server would: a
    handler that blocks cannot deadlock the test's loop, and stopping it drops
    every connection as a server shutdown does. ``sock`` (see
    :func:`bound_socket`) serves on a port the test reserved beforehand;
    otherwise the server binds a port of its own when started.
    """

    def __init__(self, app: Any, sock: Optional[socket.socket] = None, **config: Any) -> None:
        self.app = app
        self.config = {"log_level": "warning", "lifespan": "off", "timeout_graceful_shutdown": 1, **config}
        self.server: Optional[uvicorn.Server] = None
        self.thread: Optional[threading.Thread] = None
        self.sock = sock
        self.port = sock.getsockname()[1] if sock is not None else 0
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> ServerThread:
        sock, self.sock = self.sock or bound_socket(self.port), None
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        server = self.server = _Server(uvicorn.Config(self.app, **self.config), ready)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                loop.run_until_complete(server.serve(sockets=[sock]))
            except InvalidState:
                # uvicorn's websockets-sansio shutdown sends a close frame on every
                # connection, and raises on one already closing (its client closed
                # first): the server is stopping either way.
                pass
            finally:
                ready.set()
                _finish_loop(loop)
                sock.close()

        self.thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        if not ready.wait(15) or not server.started:
            raise RuntimeError("uvicorn did not start")
        return self

    def stop(self) -> None:
        if self.sock is not None:  # never started: release the reserved port
            self.sock.close()
            self.sock = None
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(15)
            assert not self.thread.is_alive(), "uvicorn did not stop"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class NativeServerThread:
    """The native server (``fastwsrpc.server``) in a thread of its own, with ``ServerThread``'s interface.

    ``ssl_certfile`` / ``ssl_keyfile`` (uvicorn's names) turn on TLS, so a test
    written for uvicorn runs unchanged against it.
    """

    def __init__(self, server: Any, sock: Optional[socket.socket] = None, path: str = "/ws", **config: Any) -> None:
        self.app = server
        self.path = path
        self.sock = sock
        self.port = sock.getsockname()[1] if sock is not None else 0
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.thread: Optional[threading.Thread] = None
        self.ssl: Any = None
        if config.get("ssl_certfile"):
            import ssl

            self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl.load_cert_chain(config["ssl_certfile"], config.get("ssl_keyfile"))
        self._stop: Optional[asyncio.Event] = None
        self.started = False

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> NativeServerThread:
        sock, self.sock = self.sock or bound_socket(self.port), None
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        async def serve() -> None:
            self._stop = asyncio.Event()
            try:
                async with self.app.listen(path=self.path, sock=sock, ssl=self.ssl):
                    self.started = True
                    ready.set()
                    await self._stop.wait()
            finally:
                ready.set()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                loop.run_until_complete(serve())
            finally:
                _finish_loop(loop)
                sock.close()

        self.thread = threading.Thread(target=run, name=f"native-{self.port}", daemon=True)
        self.thread.start()
        if not ready.wait(15) or not self.started:
            raise RuntimeError("the native server did not start")
        return self

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.loop is not None and self.thread is not None and self._stop is not None:
            stop = self._stop
            self.loop.call_soon_threadsafe(stop.set)
            self.thread.join(15)
            assert not self.thread.is_alive(), "the native server did not stop"

    def __enter__(self) -> NativeServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


#: Both servers, for fixtures and tests parametrised over them.
SERVER_KINDS = ("fastapi", "native")


def start_server(kind: str, sock: Optional[socket.socket] = None, **config: Any) -> Any:
    """A not-yet-started server of ``kind`` serving the test app's routes; ``config``: the endpoint's keywords.

    ``ssl_certfile`` / ``ssl_keyfile`` go to the listener, the rest to every endpoint.
    """
    from .app import make_app, make_native

    listener = {k: config.pop(k) for k in ("ssl_certfile", "ssl_keyfile") if k in config}
    if kind == "fastapi":
        return ServerThread(make_app(**config), sock=sock, **listener)
    return NativeServerThread(make_native(**config), sock=sock, **listener)


def serve_methods(kind: str, methods: Any, path: str = "/ws", **endpoint_kwargs: Any) -> Any:
    """A not-yet-started server of ``kind`` with one endpoint: ``methods`` at ``path``."""
    if kind == "fastapi":
        from fastapi import FastAPI

        from fastwsrpc import WebSocketRpcEndpoint

        app = FastAPI()
        WebSocketRpcEndpoint(methods, **endpoint_kwargs).register_route(app, path)
        return ServerThread(app)
    from fastwsrpc.server import WebSocketRpcServer

    return NativeServerThread(WebSocketRpcServer(methods, **endpoint_kwargs), path=path)


async def eventually(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> None:
    """Wait (bounded) until ``predicate()`` is true; fail the test otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


def methods(channel: RpcChannel) -> Observed:
    return cast(Observed, channel.methods)


def sent(channel: RpcChannel) -> int:
    """Frames this side handed to its memory transport."""
    return cast(MemoryTransport, channel.socket).sent


async def settled(*channels: RpcChannel) -> None:
    """Nothing pending and nothing running on either side: no call left behind."""
    await until(lambda: all(ch.pending_count == 0 and ch.running_count == 0 for ch in channels))


def free_port() -> int:
    """A port nothing listens on *now* (for a URL that must be refused).

    Prefer :func:`bound_socket` for a port a server will use: this one is
    closed again before it is returned, so another process may take it.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The test app in a separate process, so a test can kill it like a crash would.

    The port is bound here and the socket handed to the child (no pick, close
    and rebind); the child says when it serves through a pipe, so starting
    waits for exactly that. A restart after a kill binds the same port again.
    """

    def __init__(self, port: int = 0, kind: str = "fastapi") -> None:
        self.port = port
        self.proc: Any = None
        self.module = "tests.serve_app" if kind == "fastapi" else "tests.serve_native"

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> ServerProcess:
        import os
        import select
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        sock = bound_socket(self.port)
        self.port = sock.getsockname()[1]
        ready_r, ready_w = os.pipe()
        try:
            command = [sys.executable, "-m", self.module, "--fd", str(sock.fileno()), "--ready-fd", str(ready_w)]
            self.proc = subprocess.Popen(command, cwd=root, pass_fds=(sock.fileno(), ready_w))
        finally:
            os.close(ready_w)
            sock.close()  # the child has its own copy
        try:
            readable, _, _ = select.select([ready_r], [], [], 20)
            said = os.read(ready_r, 16) if readable else b""
        finally:
            os.close(ready_r)
        if said != b"ready\n":
            self.kill()
            raise RuntimeError("server process did not start")
        return self

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


class TcpProxy:
    """A loopback TCP proxy the test can cut, stall (partition) or slow to a trickle."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._flowing = asyncio.Event()
        self.mode = "pass"
        self.port = 0
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: List[asyncio.StreamWriter] = []

    @property
    def mode(self) -> str:
        """``pass``, ``stall`` (nothing gets through until set back) or ``trickle`` (16 bytes per 50 ms)."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = mode
        if mode == "stall":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(10_000_000):  # bounded: ends long before, when either side closes
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # stalled: held until the mode changes
                if self.mode == "trickle":
                    for i in range(0, len(data), 16):
                        writer.write(data[i : i + 16])
                        await asyncio.sleep(0.05)  # the pace of a slow link, not a wait for something
                else:
                    writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [client_writer, up_writer]
        try:
            await asyncio.gather(self._pipe(client_reader, up_writer), self._pipe(up_reader, client_writer))
        except asyncio.CancelledError:
            pass

    def cut(self) -> None:
        """Drop every connection at once, as a dead link would (RST)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _finish_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs (an endpoint's cluster heartbeat, say), then close, as ``asyncio.run`` does."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


# ---------------------------------------------------------------- raw WebSocket peers
async def raw_connection(url: str) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A TCP connection that did the opening handshake by hand and will do nothing else unless told."""
    wsuri = parse_uri(url)
    handshake = ClientProtocol(wsuri)
    reader, writer = await asyncio.open_connection(wsuri.host, wsuri.port)
    handshake.send_request(handshake.connect())
    writer.write(b"".join(handshake.data_to_send()))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    data = b""
    for _ in range(10_000):  # bounded: the server closes long before
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server never closed")


#: What a broken client sends (built with a codec twin) and the close code it must get, on either server.
PROTOCOL_FAULTS: List[Tuple[Callable[[Any], bytes], int]] = [
    (lambda s: masked(s, 1, b"\xff\xfe"), 1007),  # invalid UTF-8 text
    (lambda s: bytes(s.build_frame(1, b"{}", False)), 1002),  # an unmasked client frame
    (lambda s: masked(s, 0, b"x"), 1002),  # a continuation of nothing
    (lambda s: b"\x89\xfe" + (126).to_bytes(2, "big") + b"mask" + b"p" * 126, 1002),  # control frame too long
    (lambda s: b"\x83\x80mask", 1002),  # a reserved opcode
]
PROTOCOL_FAULT_IDS = ["utf8", "unmasked", "continuation", "long-control", "reserved-opcode"]


def masked(speedups: Any, opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return bytes(speedups.build_frame(opcode, payload, True, fin))
