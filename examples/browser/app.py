"""A web page and its server calling each other through fastwsrpc.js.

Run: python examples/browser/app.py --port 8000, then open http://127.0.0.1:8000/

The app serves three things: the page (``/``), the browser client
(``/fastwsrpc.js``, from the installed package) and the endpoint (``/ws``). The
page calls the server with named and positional params, gets an error back,
cancels a slow call, and answers the server's calls (also in the middle of
one of its own). The tests drive this app in headless Chromium and under Node
(``tests/test_browser.py``, ``tests/test_node_client.py``).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from fastwsrpc import RemoteValueError, RpcChannel, RpcMethodsBase, WebSocketRpcEndpoint, __version__
from fastwsrpc.browser import mount_client_script

PAGE = Path(__file__).with_name("index.html")

#: How each ``slow`` call ended, by key: "running", "finished" or "cancelled" (the server's own view of a cancel).
SLOW: Dict[str, str] = {}
_SLOW_ENDED: Dict[str, asyncio.Event] = {}
#: How each ``ticks`` stream ended, by key.
TICKS: Dict[str, str] = {}
#: Keys kept at most: every visitor of the page adds one, and an example must not grow without bound.
_SLOW_KEYS = 256


def _slow_ended(key: str) -> asyncio.Event:
    if key not in _SLOW_ENDED and len(_SLOW_ENDED) >= _SLOW_KEYS:
        oldest = next(iter(_SLOW_ENDED))
        del _SLOW_ENDED[oldest]
        SLOW.pop(oldest, None)
    return _SLOW_ENDED.setdefault(key, asyncio.Event())


class DemoServer(RpcMethodsBase):
    """What the page may call."""

    async def add(self, a: float, b: float) -> float:
        """Named params: ``rpc.other.add({a: 1, b: 2})``."""
        return a + b

    async def subtract(self, minuend: float, subtrahend: float) -> float:
        """Positional params: ``rpc.other.subtract(10, 4)``."""
        return minuend - subtrahend

    async def greet(self) -> str:
        """Calls the page back (``whoami``) while the page's own call waits for this answer."""
        response = await self.channel.other.whoami()
        return f"hello, {response.result}"

    async def ask_page(self, method: str, params: Any = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Call one of the page's methods and say what came back: ``{"result": ...}``, ``{"error": {...}}``
        or ``{"timeout": seconds}`` (the page was then told to cancel: its handler's signal aborts)."""
        try:
            response = await self.channel.call(method, params, timeout=timeout)
        except RemoteValueError as exc:
            return {"error": {"code": exc.code, "message": exc.message, "data": exc.data}}
        except asyncio.TimeoutError:
            return {"timeout": timeout}
        return {"result": response.result}

    async def withdraw(self, amount: float) -> float:
        """An error of the application's own: code -32010, with data."""
        balance = 10.0
        if amount > balance:
            raise RemoteValueError("insufficient funds", code=-32010, data={"balance": balance, "requested": amount})
        return balance - amount

    async def crash(self) -> None:
        """A bug: the page gets -32603 "Internal error", never the exception's text (it may hold secrets)."""
        raise ValueError("database password is hunter2")

    async def slow(self, seconds: float, key: str) -> str:
        """Takes ``seconds``, unless the caller gives up first: then this handler is cancelled (see ``SLOW``)."""
        ended = _slow_ended(key)
        SLOW[key] = "running"
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            SLOW[key] = "cancelled"
            raise
        finally:
            ended.set()
        SLOW[key] = "finished"
        return "finished"

    async def slow_status(self, key: str, wait: float = 5.0) -> Optional[str]:
        """How ``slow(key)`` ended, waiting up to ``wait`` s for it to end.

        The wait is what lets a caller that has just given up see its cancel
        land: the ``$/cancelRequest`` is on the wire before this call, but the
        cancelled handler finishes a moment after this one starts.
        """
        if key in SLOW:
            try:
                await asyncio.wait_for(_slow_ended(key).wait(), wait)
            except asyncio.TimeoutError:
                pass
        return SLOW.get(key)

    async def sum_all(self, *numbers: float) -> float:
        """Any number of positional params."""
        return sum(numbers)

    async def tags(self) -> List[str]:
        return ["fastwsrpc", __version__]

    async def ticks(self, n: int, key: str = "", fail_at: Optional[int] = None) -> AsyncIterator[Dict[str, int]]:
        """A stream: ``for await (const tick of rpc.stream("ticks", {n: 5}))``; its end is recorded under ``key``."""
        TICKS[key] = "running"
        try:
            for i in range(n):
                if fail_at == i:
                    raise RemoteValueError("out of ticks", code=-32050, data={"at": i})
                yield {"i": i}
            TICKS[key] = "finished"
        finally:
            if TICKS.get(key) == "running":
                TICKS[key] = "closed"  # the page broke out: the generator was closed at once
            while len(TICKS) > _SLOW_KEYS:
                TICKS.pop(next(iter(TICKS)))

    async def ticks_status(self, key: str) -> Optional[str]:
        """How the ``ticks`` stream under ``key`` ended: "finished", "closed", or still "running"."""
        return TICKS.get(key)


async def welcome(channel: RpcChannel) -> None:
    """The server speaks first: a notification once the page is connected (a page without ``welcome`` ignores it)."""
    await channel.notify("welcome", {"server": f"fastwsrpc {__version__}"})


def make_app() -> FastAPI:
    """The page, the script and the endpoint, in one app (a new one per call: the tests start several)."""
    app = FastAPI(title="fastwsrpc browser example")
    WebSocketRpcEndpoint(DemoServer(), on_connect=[welcome]).register_route(app, "/ws")
    mount_client_script(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    print(f"open http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(make_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
