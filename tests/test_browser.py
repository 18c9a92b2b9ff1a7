"""fastwsrpc.js in a real browser: headless Chromium driven through the DevTools protocol.

The server is the browser example (``examples/browser/app.py``) on a real
127.0.0.1 port; the page loads ``/fastwsrpc.js`` from it, as a user's page
would. Chromium is Debian's (``apt-get install chromium chromium-driver``),
started here with a fresh profile and driven over its DevTools WebSocket with
the ``websockets`` client we already depend on, so no driver or extra package
is needed. Each test opens its own tab.

Without Chromium these tests skip, saying what to install; with
``FASTWSRPC_REQUIRE_BROWSER=1`` (CI) they fail instead. Nothing here sleeps to
wait for something: the page's promises are awaited through the protocol, and
the server's state is polled with a bound.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, cast

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.applications import Starlette
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from fastwsrpc.browser import client_script, client_types, mount_client_script

from .durable_js_app import DurableServer
from .support import NativeServerThread, ServerThread, bound_socket

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "browser" / "app.py"
INSTALL = "apt-get install chromium chromium-driver"
REQUIRE = os.environ.get("FASTWSRPC_REQUIRE_BROWSER") == "1"
#: The flags this sandbox (and CI containers) need: no sandboxing, no GPU, and no
#: background connections of Chromium's own, which the network here refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--remote-debugging-port=0",  # the port Chromium picks is written to DevToolsActivePort
]
#: Longest wait for anything (Chromium's start, a page's promise, the server's state).
BOUND = 30.0


def load_example() -> ModuleType:
    """``examples/browser/app.py`` as a module (examples are not a package)."""
    spec = importlib.util.spec_from_file_location("fastwsrpc_browser_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE_APP = load_example()
#: The server's own view of each ``slow`` call: "running", "finished" or "cancelled".
SLOW = cast(Dict[str, str], EXAMPLE_APP.SLOW)

#: A page for the tests: the client module, and methods the server may call, on ``window``.
TEST_PAGE = """<!doctype html>
<title>fastwsrpc test page</title>
<script type="module">
  import * as fastwsrpc from "/fastwsrpc.js";
  window.fastwsrpc = fastwsrpc;
  window.cancelled = new Promise((resolve) => (window.onCancelled = resolve));
  window.methods = {
    whoami: () => "test page",
    multiply: ({ x, y }) => x * y,
    concat: (a, b) => `${a}${b}`,
    refuse() { throw new fastwsrpc.RpcError(-32011, "the page refuses", { why: "asked to" }); },
    crash() { throw new TypeError("a bug in the page"); },
    waitForCancel(context) {
      return new Promise((_resolve, reject) => context.signal.addEventListener("abort", () => {
        onCancelled([context.id, context.signal.reason.name]);
        reject(context.signal.reason);
      }));
    },
  };
</script>
"""


def make_app() -> FastAPI:
    """The example's app, plus the test page at ``/test``."""
    app = cast(FastAPI, EXAMPLE_APP.make_app())

    @app.get("/test", response_class=HTMLResponse)
    async def test_page() -> HTMLResponse:
        return HTMLResponse(TEST_PAGE)

    return app


def need(what: str) -> None:
    message = f"{what}: {INSTALL} (with FASTWSRPC_REQUIRE_BROWSER=1 this is a failure, not a skip)"
    if REQUIRE:
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> Optional[str]:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def poll(condition: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    """Wait until ``condition()`` (state of another process or thread) holds, at most ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {bound} s: {what}")
        time.sleep(0.02)  # the poll's interval, not a wait for the thing itself


class PageError(AssertionError):
    """The page's code threw (or rejected); the message is the browser's description."""


class Browser:
    """Headless Chromium and one DevTools connection to it; tabs are sessions on that connection."""

    def __init__(self, executable: str) -> None:
        self.profile = tempfile.TemporaryDirectory(prefix="fastwsrpc-chromium-")
        self._stack = contextlib.ExitStack()
        self.log = open(os.path.join(self.profile.name, "chromium.log"), "wb")  # closed in close()
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its helpers share our new process group, ended with it
        )
        active = Path(self.profile.name) / "DevToolsActivePort"
        try:
            poll(lambda: self._started(active), "Chromium wrote DevToolsActivePort")
        except AssertionError:
            self.close()
            raise
        port, path = active.read_text().split()[:2]
        # Entered as a context (ExitStack): websockets 17.1+ wants that, and older ones accept it.
        self.ws: ClientConnection = self._stack.enter_context(
            ws_connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=BOUND)
        )
        self._ids = itertools.count(1)
        self.events: List[Dict[str, Any]] = []

    def _started(self, active: Path) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"Chromium exited with {self.proc.returncode}: {self.tail()}")
        return active.exists() and len(active.read_text().split()) >= 2

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def send(self, method: str, session: Optional[str] = None, **params: Any) -> Dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are kept in ``events``."""
        call_id = next(self._ids)
        message: Dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + BOUND
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"DevTools: no answer to {method} within {BOUND} s")
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("id") != call_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise AssertionError(f"DevTools: {method} failed: {reply['error']}")
            return cast(Dict[str, Any], reply.get("result", {}))

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                try:
                    self.send("Browser.close")
                except Exception:  # already gone: the process handling below still runs
                    pass
                self._stack.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this process leads: ours alone
                self.proc.wait(10)
        finally:
            self.log.close()
            self.profile.cleanup()


class Tab:
    """One page: navigate it, run JavaScript in it, read what it logged."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.send("Target.attachToTarget", targetId=self.target, flatten=True)["sessionId"]
        browser.send("Runtime.enable", self.session)

    def open(self, url: str) -> None:
        """Load ``url`` and wait until its module scripts ran (``readyState`` is complete after them)."""
        self.browser.send("Page.navigate", self.session, url=url)
        self.js(
            """new Promise((resolve) => document.readyState === "complete"
                 ? resolve() : addEventListener("load", () => resolve(), { once: true }))"""
        )

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` (awaited if it is a promise) and answer its JSON value."""
        reply = self.browser.send(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            timeout=BOUND * 1000,
        )
        details = reply.get("exceptionDetails")
        if details is not None:
            description = details.get("exception", {}).get("description") or details.get("text")
            raise PageError(f"{description}\nconsole: {self.console()}")
        return reply["result"].get("value")

    def run(self, body: str) -> Any:
        """Run ``body`` as the body of an async function in the page; answer what it returns."""
        return self.js(f"(async () => {{ {body} }})()")

    def console(self) -> List[Any]:
        """What the page logged or threw, for failure messages."""
        mine = [e for e in self.browser.events if e.get("sessionId") == self.session]
        return [e["params"] for e in mine if e["method"] in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown")]

    def close(self) -> None:
        self.browser.send("Target.closeTarget", targetId=self.target)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        need("Chromium is not installed")
    instance = Browser(cast(str, executable))
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(make_app()) as srv:
        yield srv


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    page = Tab(browser)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def durable() -> Iterator[DurableServer]:
    """The server of the durability tests (``tests/durable_js_app.py``): sessions, topic history, a gate, proxies."""
    with DurableServer() as srv:
        yield srv


@pytest.fixture
def link(durable: DurableServer) -> Iterator[int]:
    """A TCP proxy of this test's own in front of the durable server: its port (cut or stalled by the test)."""
    port = cast(int, durable.call(durable.methods.proxy()))
    try:
        yield port
    finally:
        durable.call(durable.methods.close_proxy(port))


@pytest.fixture
def page(tab: Tab, server: ServerThread) -> Tab:
    """A tab on the test page, connected: ``window.rpc`` (10 s default timeout per call)."""
    tab.open(server.url("/test", scheme="http"))
    tab.run('window.rpc = await fastwsrpc.connect("/ws", { methods, timeout: 10000 });')
    return tab


# ------------------------------------------------------------------ the route (no browser needed)


def _get(url: str, headers: Optional[Dict[str, str]] = None) -> Any:
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=BOUND)


def test_the_script_is_served_as_javascript(server: ServerThread) -> None:
    with _get(server.url("/fastwsrpc.js", scheme="http")) as response:
        assert response.headers["Content-Type"].startswith("application/javascript")
        assert response.read().decode("utf-8") == client_script()
        etag = response.headers["ETag"]
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        _get(server.url("/fastwsrpc.js", scheme="http"), {"If-None-Match": etag})
    not_modified.value.close()  # it holds the connection
    assert not_modified.value.code == 304
    assert "export async function connect" in client_script()
    assert "export declare function connect" in client_types()


@pytest.mark.parametrize("kind", ["router", "starlette"])
def test_the_script_mounts_on_a_router_or_a_starlette_app(kind: str) -> None:
    app: Any
    if kind == "router":
        router = APIRouter(prefix="/static")
        mount_client_script(router, "/client.js")
        app = FastAPI()
        app.include_router(router)
        path = "/static/client.js"
    else:
        app = Starlette()
        mount_client_script(app, "/client.js")
        path = "/client.js"
    with ServerThread(app) as srv, _get(srv.url(path, scheme="http")) as response:
        assert response.headers["Content-Type"].startswith("application/javascript")
        assert response.read().decode("utf-8") == client_script()


# --------------------------------------------------------------------------- in the browser


def test_the_example_page_runs_to_the_end(tab: Tab, server: ServerThread) -> None:
    """The page a user opens first: every step of its demo shows the expected outcome."""
    tab.open(server.url("/", scheme="http"))
    state = tab.js(
        """new Promise((resolve) => {
             const state = () => document.body.dataset.state;
             if (state() !== "running") return resolve(state());
             new MutationObserver(() => state() !== "running" && resolve(state()))
               .observe(document.body, { attributes: true });
           })"""
    )
    rows = tab.js(
        """Object.fromEntries([...document.querySelectorAll("tr[data-step]")]
             .map((row) => [row.dataset.step, JSON.parse(row.dataset.outcome)]))"""
    )
    assert state == "done", rows
    assert rows["named"] == 3
    assert rows["positional"] == 6
    assert rows["both-ways"] == "hello, the browser page"
    assert rows["server-calls-page"] == [{"result": 42}, {"result": "ab"}]
    assert rows["page-errors"][0] == {
        "error": {"code": -32011, "message": "the page refuses", "data": {"why": "it was asked to"}}
    }
    assert rows["page-errors"][1]["error"]["code"] == -32601
    assert rows["error"] == {"code": -32010, "message": "insufficient funds", "data": {"balance": 10, "requested": 100}}
    assert rows["timeout"] == "cancelled"
    assert rows["abort"] == "cancelled"
    assert rows["server-cancels-page"] == {"timeout": 0.2}
    assert rows["batch"][:2] == [5, 6]
    assert rows["batch"][2]["code"] == -32010
    assert rows["welcome"].startswith("fastwsrpc ")


def test_named_and_positional_params(page: Tab) -> None:
    assert page.run("return await rpc.other.add({ a: 1, b: 2 });") == 3
    assert page.run("return await rpc.other.subtract(10, 4);") == 6
    assert page.run("return await rpc.other.sum_all(1, 2, 3, 4);") == 10
    assert page.run('return await rpc.call("subtract", [1, 4]);') == -3
    assert page.run(
        'return [rpc.connected, rpc.state, rpc.other.then === undefined, rpc.url.startsWith("ws://")];'
    ) == [
        True,
        "open",
        True,
        True,
    ]


def test_the_server_calls_the_page_during_a_page_call(page: Tab) -> None:
    assert page.run("return await rpc.other.greet();") == "hello, test page"
    named = page.run('return await rpc.other.ask_page({ method: "multiply", params: { x: 6, y: 7 } });')
    positional = page.run('return await rpc.other.ask_page({ method: "concat", params: ["a", "b"] });')
    assert named == {"result": 42}
    assert positional == {"result": "ab"}


def test_a_remote_error_is_an_RpcError(page: Tab) -> None:
    error = page.run(
        """try { await rpc.other.withdraw({ amount: 100 }); return "no error"; }
           catch (e) { return [e instanceof fastwsrpc.RpcError, e.name, e.code, e.message, e.data]; }"""
    )
    assert error == [True, "RpcError", -32010, "insufficient funds", {"balance": 10, "requested": 100}]
    crash = page.run("return await rpc.other.crash().catch((e) => [e.code, e.message]);")
    assert crash == [-32603, "Internal error"]  # the server's exception text stays on the server


def test_the_pages_errors_keep_their_codes(page: Tab) -> None:
    refused = page.run('return await rpc.other.ask_page({ method: "refuse" });')
    assert refused == {"error": {"code": -32011, "message": "the page refuses", "data": {"why": "asked to"}}}
    crashed = page.run('return await rpc.other.ask_page({ method: "crash" });')
    assert crashed == {"error": {"code": -32603, "message": "Internal error", "data": None}}
    missing = page.run('return await rpc.other.ask_page({ method: "no_such_method" });')
    assert missing["error"]["code"] == -32601


def test_an_abort_signal_cancels_the_call_on_the_server(page: Tab) -> None:
    key = "browser-abort"
    page.run(
        f"""window.controller = new AbortController();
            window.slowCall = rpc.call("slow", {{ seconds: 60, key: "{key}" }}, {{ signal: controller.signal }})
              .then(() => "answered", (e) => e.name);"""
    )
    poll(lambda: SLOW.get(key) == "running", "the server runs slow()")
    assert page.run("controller.abort(); return await slowCall;") == "AbortError"
    poll(lambda: SLOW.get(key) == "cancelled", "the server cancelled slow() on $/cancelRequest")


def test_a_timeout_rejects_and_cancels_the_call_on_the_server(page: Tab) -> None:
    key = "browser-timeout"
    error = page.run(
        f"""try {{ await rpc.call("slow", {{ seconds: 60, key: "{key}" }}, {{ timeout: 100 }}); return "answered"; }}
            catch (e) {{ return [e instanceof fastwsrpc.RpcTimeoutError, e.name, e.method, e.timeout]; }}"""
    )
    assert error == [True, "RpcTimeoutError", "slow", 100]
    poll(lambda: SLOW.get(key) == "cancelled", "the server cancelled slow() on $/cancelRequest")


def test_the_server_cancels_a_page_method(page: Tab) -> None:
    assert page.run('return await rpc.other.ask_page({ method: "waitForCancel", timeout: 0.2 });') == {"timeout": 0.2}
    # The page's handler saw its signal abort (the cancel may land just after the answer).
    call_id, reason = page.run("return await cancelled;")
    assert reason == "AbortError"
    assert call_id is not None


def test_a_batch_answers_in_order(page: Tab) -> None:
    responses = page.run(
        """const responses = await rpc.batch([
             ["add", { a: 1, b: 2 }],
             ["sum_all", [1, 2, 3]],
             { method: "withdraw", params: { amount: 100 } },
             ["tags", undefined, true],
           ]);
           return responses.map((r) => r.error ?? r.result);"""
    )
    assert responses[:2] == [3, 6]
    assert responses[2] == {"code": -32010, "message": "insufficient funds", "data": {"balance": 10, "requested": 100}}
    assert len(responses) == 3  # the notification has no response


def test_the_page_reconnects_after_the_server_restarts(tab: Tab) -> None:
    """Stop the server, start a new one on the SAME port: the page reconnects by itself and calls again."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    first = ServerThread(make_app(), sock=sock).start()
    try:
        tab.open(first.url("/test", scheme="http"))
        tab.run(
            """window.events = [];
               window.rpc = await fastwsrpc.connect("/ws", {
                 methods, reconnect: { initialDelay: 20, maxDelay: 200 },
               });
               for (const type of ["connect", "disconnect"]) {
                 rpc.addEventListener(type, (e) => events.push([type, e.detail]));
               }
               window.pending = rpc.call("slow", { seconds: 60, key: "browser-reconnect" })
                 .then(() => "answered", (e) => [e.name, e.message]);"""
        )
        assert tab.run("return await rpc.other.add({ a: 1, b: 2 });") == 3
        poll(lambda: SLOW.get("browser-reconnect") == "running", "the server runs slow()")
    finally:
        first.stop()
    lost = tab.run("return await pending;")
    assert lost[0] == "RpcConnectionError", lost
    assert tab.run("return rpc.state;") == "reconnecting"  # nothing listens on the port now
    assert tab.run('return await rpc.call("add", { a: 1, b: 1 }).catch((e) => e.name);') == "RpcConnectionError"

    with ServerThread(make_app(), sock=bound_socket(port)):
        answer = tab.run(
            """if (!rpc.connected) {
                 await new Promise((resolve) => rpc.addEventListener("connect", resolve, { once: true }));
               }
               return await rpc.other.subtract(10, 4);"""
        )
        assert answer == 6
        events = tab.run("return events;")
        assert events[0][0] == "disconnect" and events[0][1]["willReconnect"] is True
        assert ["connect", {"reconnected": True}] in events
        assert tab.run("return await rpc.other.greet();") == "hello, test page"  # both ways again
        tab.run("await rpc.close();")


class CompressionMethods(EXAMPLE_APP.DemoServer):  # type: ignore[misc,name-defined]
    """The demo's methods, plus what the compression test asks the native server."""

    async def echo(self, text: str) -> str:
        return text

    async def agreed(self) -> Any:
        """What permessage-deflate agreed on this connection, and whether our deflater was made."""
        socket = self.channel.socket
        compression = socket.compression
        return [list(compression) if compression is not None else None, socket._deflater is not None]


def test_chromium_and_the_native_server_agree_compression(tab: Tab, server: ServerThread) -> None:
    """Chromium always offers permessage-deflate: the native server agrees it and both sides use it."""
    from fastwsrpc.server import WebSocketRpcServer

    native = WebSocketRpcServer(CompressionMethods(), allowed_origins="*")
    with NativeServerThread(native) as srv:
        tab.open(server.url("/test", scheme="http"))  # the page from uvicorn, the socket to the native server
        answers = tab.run(
            f"""window.rpc = await fastwsrpc.connect("{srv.url()}", {{ methods, timeout: 10000 }});
               const big = "compressible JSON text, ".repeat(2000) + "\u00e9\u4e2d\ud83d\ude00";
               const small = await rpc.call("add", {{ a: 1, b: 2 }});
               const echoed = await rpc.call("echo", {{ text: big }});
               const agreed = await rpc.call("agreed");
               await rpc.close();
               return [small, echoed === big, agreed];"""
        )
    # Chromium offers client_max_window_bits: the server caps it (12) and its own window (12); takeover kept.
    assert answers == [3, True, [[12, 12, False, False], True]], answers


# ----------------------------------------------------------- durable: sessions, idempotent calls, recovery

#: The page's client for the durability tests: reconnects fast, records every frame both ways in `wire`.
DURABLE_CLIENT = """
  window.wire = [];
  class Spy extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => wire.push(["in", JSON.parse(event.data)]));
    }
    send(data) {
      wire.push(["out", JSON.parse(data)]);
      super.send(data);
    }
  }
  window.nextSession = () => new Promise((resolve) =>
    rpc.addEventListener("session", (e) => resolve(e.detail), { once: true }));
  window.rpc = await fastwsrpc.connect("ws://127.0.0.1:%d/ws", {
    WebSocket: Spy, reconnect: { initialDelay: 10, maxDelay: 100 }, timeout: 20000,
  });
  window.firstSession = rpc.session ?? await nextSession();
"""


def test_an_idempotent_call_cut_off_while_running_is_answered_once_and_runs_once(
    tab: Tab, durable: DurableServer, link: int
) -> None:
    tab.open(durable.url("/page", scheme="http"))
    key = "browser-idempotent"
    first = tab.run(
        DURABLE_CLIENT % link
        + f"""window.kept = rpc.call("gated", {{ key: "{key}", value: 5 }}, {{ idempotent: true }})
                .then((value) => ["answered", value], (e) => [e.name, e.message]);
              window.lost = rpc.call("gated", {{ key: "{key}-plain", value: 6 }})
                .then((value) => ["answered", value], (e) => [e.name, e.message]);
              return firstSession;"""
    )
    assert first["resumed"] is False and isinstance(first["id"], str)
    durable.call(durable.methods.wait_started(key))
    durable.call(durable.methods.wait_started(f"{key}-plain"))
    tab.run("window.resumed = nextSession();")
    durable.call(durable.methods.link(link, "pass", True))  # the link dies under both calls

    lost = tab.run("return await lost;")
    assert lost[0] == "RpcConnectionError", lost  # an ordinary call in flight fails, as always
    assert tab.run("return await resumed;") == {"id": first["id"], "resumed": True, "ttl": first["ttl"]}
    # A round trip first: the repeat (the first frame on the new connection) is then known to the
    # server, which will answer it from the run still going. (Had the run ended before the server read
    # the repeat, it would answer both, the run's answer and the repeat's; the client drops the second.)
    assert tab.run(f'return await rpc.other.runs({{ key: "{key}" }});') == 1
    durable.call(durable.methods.open_gate(key))
    assert tab.run("return await kept;") == ["answered", 5]
    # A round trip after the answer: a second answer to the call would have come before it.
    assert tab.run(f'return await rpc.other.runs({{ key: "{key}" }});') == 1  # ran once, sent twice
    requests, answers = tab.run(
        f"""const requests = wire.filter(([way, f]) => way === "out" && f.params?.key === "{key}"
                                                      && f.method === "gated").map(([, f]) => f.id);
            const answers = wire.filter(([way, f]) => way === "in" && f.id === requests[0]).map(([, f]) => f.result);
            return [requests, answers];"""
    )
    assert len(requests) == 2 and requests[0] == requests[1] and requests[0].startswith("idem-"), requests
    assert answers == [5]
    durable.call(durable.methods.open_gate(f"{key}-plain"))
    tab.run("await rpc.close();")


def test_a_subscription_recovers_what_was_published_while_the_page_was_away(
    tab: Tab, durable: DurableServer, link: int
) -> None:
    tab.open(durable.url("/page", scheme="http"))
    topic = "browser-news"
    tab.run(
        DURABLE_CLIENT % link
        + f"""window.subscription = rpc.subscribe("{topic}");
              await subscription.open();
              window.take = async (n) => {{
                const events = [];
                while (events.length < n) events.push((await subscription.next()).value);
                return events;
              }};"""
    )
    methods = durable.methods
    durable.call(methods.publish_many(topic, 0, 5))
    events = tab.run("return await take(5);")
    assert tab.run("return subscription.recovered;") is None  # the first subscription's notice is not delivered

    durable.call(methods.link(link, "stall", True))  # a partition: the page is away
    durable.call(methods.publish_many(topic, 5, 10))  # published while it is away
    durable.call(methods.link(link, "pass"))
    events += tab.run("return await take(10);")
    durable.call(methods.publish_many(topic, 15, 5))  # and live ones after
    events += tab.run("return await take(5);")

    assert [event.get("recovered") for event in events] == [None] * 20  # events only: nothing was lost
    assert [event["data"] for event in events] == list(range(20))  # in order, none twice, none missing
    assert [event["offset"] for event in events] == list(range(1, 21))
    assert tab.run("return [subscription.recovered, subscription.resubscribes];") == [True, 1]
    tab.run("await subscription.close(); await rpc.close();")
