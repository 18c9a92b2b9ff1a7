"""A server for the durability tests of fastwsrpc.js (sessions, idempotent calls, topic recovery).

``tests/test_node_client.py`` (Node) and ``tests/test_browser.py`` (Chromium)
run it. The client under test connects through a :class:`~tests.support.TcpProxy`
of its own, which a test cuts (the connection dies under the client, as a dead
link would) or stalls (the client is kept away while the server publishes);
the test drives everything through this server's own methods, from a second,
direct connection:

* ``proxy()``: a new proxy to this server, its port (``link(port, mode, cut)``
  stalls, passes or cuts it);
* ``gated(key, value)``: counts a run under ``key``, then waits for
  ``open_gate(key)``; ``wait_started(key, count)`` waits (bounded) until it
  ran that often, ``runs(key)`` says how often it did;
* ``publish(topic, data)`` / ``publish_many(topic, start, count)``: on a topic
  history of :data:`HISTORY` publications.

The page at ``/page`` loads ``/fastwsrpc.js`` into ``window.fastwsrpc``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Tuple

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from fastwsrpc import RpcMethodsBase, WebSocketRpcEndpoint
from fastwsrpc.browser import mount_client_script

from .support import ServerThread, TcpProxy

#: Publications each topic's history keeps.
HISTORY = 100
#: Longest server-side wait (seconds) of ``wait_started``.
BOUND = 20.0

PAGE = """<!doctype html>
<title>fastwsrpc durability page</title>
<script type="module">
  import * as fastwsrpc from "/fastwsrpc.js";
  window.fastwsrpc = fastwsrpc;
</script>
"""


class DurableMethods(RpcMethodsBase):
    """What the tests call (see the module's docstring); every method runs in the server's loop."""

    def __init__(self) -> None:
        super().__init__()
        self.endpoint: Optional[WebSocketRpcEndpoint] = None
        self.port = 0
        self.proxies: Dict[int, TcpProxy] = {}
        self.counts: Dict[str, int] = {}
        self._gates: Dict[str, asyncio.Event] = {}
        # Each connection works on a shallow copy of this object: what they share must live in a
        # container made here (the condition itself is made in the server's loop: Python 3.9 binds
        # an asyncio primitive to the loop it is made in).
        self._shared: Dict[str, asyncio.Condition] = {}

    def _condition(self) -> asyncio.Condition:
        changed = self._shared.get("changed")
        if changed is None:
            changed = self._shared["changed"] = asyncio.Condition()
        return changed

    def _gate(self, key: str) -> asyncio.Event:
        return self._gates.setdefault(key, asyncio.Event())

    async def proxy(self) -> int:
        proxy = await TcpProxy(self.port).start()
        self.proxies[proxy.port] = proxy
        return proxy.port

    async def link(self, port: int, mode: str = "pass", cut: bool = False) -> None:
        """Set the proxy's mode (``pass`` or ``stall``), then cut its connections if asked."""
        proxy = self.proxies[port]
        proxy.mode = mode
        if cut:
            proxy.cut()

    async def close_proxy(self, port: int) -> None:
        proxy = self.proxies.pop(port, None)
        if proxy is not None:
            await proxy.close()

    async def gated(self, key: str, value: Any = None) -> Any:
        changed = self._condition()
        async with changed:
            self.counts[key] = self.counts.get(key, 0) + 1
            changed.notify_all()
        await self._gate(key).wait()
        return value

    async def wait_started(self, key: str, count: int = 1) -> int:
        changed = self._condition()
        async with changed:
            await asyncio.wait_for(changed.wait_for(lambda: self.counts.get(key, 0) >= count), BOUND)
        return self.counts[key]

    async def open_gate(self, key: str) -> None:
        self._gate(key).set()

    async def runs(self, key: str) -> int:
        return self.counts.get(key, 0)

    async def publish(self, topic: str, data: Any = None) -> Any:
        assert self.endpoint is not None
        return await self.endpoint.publish(topic, data)

    async def publish_many(self, topic: str, start: int, count: int) -> None:
        """Publish ``start``, ``start + 1``, ... (``count`` of them), in order."""
        for data in range(start, start + count):
            await self.publish(topic, data)


def make_app() -> Tuple[FastAPI, DurableMethods]:
    methods = DurableMethods()
    app = FastAPI(title="fastwsrpc.js durability tests")
    # Any origin: the page is served from this server's port, its connection goes to a proxy's.
    endpoint = WebSocketRpcEndpoint(methods, topic_history=HISTORY, allowed_origins="*")
    endpoint.register_route(app, "/ws")
    methods.endpoint = endpoint
    mount_client_script(app)

    @app.get("/page", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    return app, methods


class DurableServer:
    """The app on a :class:`ServerThread`; ``call(coroutine)`` runs one in its loop from the test's thread."""

    def __init__(self) -> None:
        app, self.methods = make_app()
        self.thread = ServerThread(app)

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        return self.thread.url(path, scheme)

    def call(self, coroutine: Any, timeout: float = BOUND) -> Any:
        assert self.thread.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.thread.loop).result(timeout)

    def __enter__(self) -> DurableServer:
        self.thread.start()
        self.methods.port = self.thread.port
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            proxies: List[int] = list(self.methods.proxies)
            for port in proxies:
                self.call(self.methods.close_proxy(port))
        finally:
            self.thread.stop()
