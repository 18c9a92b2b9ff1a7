"""Test helpers: a real uvicorn server on a free loopback port, in a thread of its own."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Optional

import uvicorn


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1:<free port> until the context exits.

    The server has its own thread and event loop, as a real server would: a
    handler that blocks cannot deadlock the test's loop, and stopping it drops
    every connection as a server shutdown does.
    """

    def __init__(self, app: Any, **config: Any) -> None:
        self.app = app
        self.config = {"log_level": "warning", "lifespan": "off", "timeout_graceful_shutdown": 1, **config}
        self.server: Optional[uvicorn.Server] = None
        self.thread: Optional[threading.Thread] = None
        self.port = 0
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> ServerThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, **self.config))

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                loop.run_until_complete(self.server.serve(sockets=[sock]))  # type: ignore[union-attr]
            finally:
                loop.close()
                sock.close()

        self.thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(15)
            assert not self.thread.is_alive(), "uvicorn did not stop"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def eventually(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> None:
    """Wait (bounded) until ``predicate()`` is true; fail the test otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The test app in a separate process, so a test can kill it like a crash would."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.proc: Any = None

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> ServerProcess:
        import os
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.serve_app", "--port", str(self.port)], cwd=root)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server process exited")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server process did not start")

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
        self.mode = "pass"
        self.port = 0
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: list = []

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
                while self.mode == "stall":
                    await asyncio.sleep(0.05)
                if self.mode == "trickle":
                    for i in range(0, len(data), 16):
                        writer.write(data[i : i + 16])
                        await asyncio.sleep(0.05)
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
