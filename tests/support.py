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
