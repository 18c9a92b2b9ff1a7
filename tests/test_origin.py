"""The Origin rule against cross-site WebSocket hijacking (``fastwsrpc.origin``, issue 26 "The door").

Three layers:

* the pure rule, :func:`~fastwsrpc.origin.origin_refusal` and
  :func:`~fastwsrpc.origin.normalize_allowed_origins`, on tables;
* both servers (``allowed_origins=`` of ``WebSocketRpcEndpoint`` and of
  ``WebSocketRpcServer``), driven by raw HTTP upgrade requests whose ``Origin``
  and ``Host`` are set by hand: a refusal is HTTP 403 with the reason in the
  body, logged once at INFO;
* headless Chromium (the helpers of ``test_browser.py``): a page served from
  another origin (another port of 127.0.0.1 is another origin) cannot open a
  WebSocket to the server, a page of the same origin can. Without Chromium
  these skip, unless ``FASTWSRPC_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union, cast

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse

from fastwsrpc import WebSocketRpcEndpoint
from fastwsrpc.origin import ANY_ORIGIN, normalize_allowed_origins, origin_refusal
from fastwsrpc.server import HandshakeRequest, WebSocketRpcServer

from .app import ServerMethods
from .support import NativeServerThread, ServerThread, eventually, serve_methods
from .test_browser import Browser, Tab, chromium_path, need

Allowed = Union[None, str, Sequence[str]]

# ============================================================================ the rule

HOST = "api.example.com"

#: (origin, host, allowed_origins, accepted), with an id each.
RULE = [
    # no Origin: not a browser, unaffected
    pytest.param(None, HOST, None, True, id="no-origin"),
    pytest.param(None, None, None, True, id="no-origin-no-host"),
    # the default: the same origin only, either scheme
    pytest.param("https://api.example.com", HOST, None, True, id="same-origin-https"),
    pytest.param("http://api.example.com", HOST, None, True, id="same-origin-http"),
    pytest.param("http://127.0.0.1:8000", "127.0.0.1:8000", None, True, id="same-origin-port"),
    pytest.param("HTTPS://API.Example.COM", "api.EXAMPLE.com", None, True, id="case"),
    pytest.param("https://api.example.com:443", HOST, None, True, id="default-port-in-origin"),
    pytest.param("https://api.example.com", "api.example.com:443", None, True, id="default-port-in-host"),
    pytest.param("http://api.example.com:80", HOST, None, True, id="http-default-port"),
    pytest.param("http://api.example.com", "api.example.com:80", None, True, id="http-default-port-in-host"),
    pytest.param("https://api.example.com:8443", HOST, None, False, id="other-port"),
    pytest.param("http://127.0.0.1:3000", "127.0.0.1:8000", None, False, id="other-port-loopback"),
    pytest.param("https://evil.example", HOST, None, False, id="other-site"),
    pytest.param("https://evil.api.example.com", HOST, None, False, id="subdomain"),
    pytest.param("https://api.example.com.evil.example", HOST, None, False, id="suffix-trick"),
    pytest.param("https://notapi.example.com", HOST, None, False, id="prefix-trick"),
    pytest.param("chrome-extension://api.example.com", HOST, None, False, id="not-a-web-scheme"),
    pytest.param("https://api.example.com", None, None, False, id="no-host"),
    pytest.param("https://api.example.com", "api.example.com:x", None, False, id="malformed-host"),
    # IPv6 literals
    pytest.param("http://[::1]:8000", "[::1]:8000", None, True, id="ipv6"),
    pytest.param("http://[0:0:0:0:0:0:0:1]:8000", "[::1]:8000", None, True, id="ipv6-long-form"),
    pytest.param("http://[::1]:8000", "[0::1]:8000", None, True, id="ipv6-long-form-host"),
    pytest.param("http://[::1]:3000", "[::1]:8000", None, False, id="ipv6-other-port"),
    pytest.param("http://[::2]:8000", "[::1]:8000", None, False, id="ipv6-other-host"),
    pytest.param("http://[::1:8000", "[::1]:8000", None, False, id="ipv6-malformed"),
    # a list widens the default
    pytest.param("https://app.example.com", HOST, ["https://app.example.com"], True, id="listed"),
    pytest.param("https://app.example.com", HOST, "https://app.example.com", True, id="listed-as-str"),
    pytest.param("https://App.Example.com:443", HOST, ["HTTPS://app.example.COM:443/"], True, id="listed-normalized"),
    pytest.param("http://localhost:3000", HOST, ["http://localhost:3000"], True, id="listed-port"),
    pytest.param("https://api.example.com", HOST, ["https://app.example.com"], True, id="listed-same-origin-stays"),
    pytest.param("https://evil.example", HOST, ["https://app.example.com"], False, id="listed-other"),
    pytest.param("http://app.example.com", HOST, ["https://app.example.com"], False, id="listed-scheme-counts"),
    pytest.param("https://app.example.com:8443", HOST, ["https://app.example.com"], False, id="listed-port-counts"),
    pytest.param("http://localhost:3001", HOST, ["http://localhost:3000"], False, id="listed-other-port"),
    pytest.param("https://evil.example", HOST, [], False, id="empty-list-is-the-default"),
    # "*" opens it
    pytest.param("https://evil.example", HOST, "*", True, id="any"),
    pytest.param("https://evil.example", HOST, ["https://app.example.com", "*"], True, id="any-in-a-list"),
    pytest.param("null", HOST, "*", True, id="any-null"),
    pytest.param("not an origin", HOST, "*", True, id="any-malformed"),
    # the opaque origin
    pytest.param("null", HOST, None, False, id="null"),
    pytest.param("null", HOST, ["https://app.example.com"], False, id="null-not-listed"),
    pytest.param("null", HOST, ["null"], True, id="null-listed"),
    # malformed Origin headers
    pytest.param("api.example.com", HOST, None, False, id="no-scheme"),
    pytest.param("https://", HOST, None, False, id="no-host-in-origin"),
    pytest.param("https://api.example.com/app", HOST, None, False, id="path"),
    pytest.param("https://user@api.example.com", HOST, None, False, id="userinfo"),
    pytest.param("https://api.example.com:99999", HOST, None, False, id="bad-port"),
    pytest.param("https://api.example.com, https://evil.example", HOST, None, False, id="two-origins"),
    pytest.param("https://bücher.example", "bücher.example", None, False, id="not-ascii"),
    pytest.param("", HOST, None, False, id="empty"),
]


@pytest.mark.parametrize(("origin", "host", "allowed", "accepted"), RULE)
def test_the_origin_rule(origin: Optional[str], host: Optional[str], allowed: Allowed, accepted: bool) -> None:
    refusal = origin_refusal(origin, host, normalize_allowed_origins(allowed))
    if accepted:
        assert refusal is None, refusal
    else:
        assert isinstance(refusal, str) and refusal, "refused without a reason"
        assert "\n" not in refusal and len(refusal) < 400  # one line, fit for a log and a 403 body


def test_a_refusal_says_what_was_refused_and_what_is_allowed() -> None:
    assert origin_refusal("https://evil.example", "api.example.com", None) == (
        "origin https://evil.example is not allowed (allowed_origins: same origin as host api.example.com)"
    )
    listed = origin_refusal("https://evil.example", "api.example.com", normalize_allowed_origins(["https://a.example"]))
    assert listed is not None and "https://a.example" in listed and "api.example.com" in listed
    null = origin_refusal("null", "api.example.com", None)
    assert null is not None and "null" in null
    assert "Host" in cast(str, origin_refusal("https://evil.example", None, None))


def test_a_hostile_header_is_quoted_and_cut_not_echoed() -> None:
    """The Origin is the peer's text: it reaches the log and the 403 body quoted and at most ~100 characters."""
    reason = cast(str, origin_refusal("x" * 5000, HOST, None))
    assert "malformed" in reason and len(reason) < 200 and "'xxx" in reason
    reason = cast(str, origin_refusal("https://evil.example", "h\x1b[31m" + "y" * 5000, None))
    assert "\x1b" not in reason and "malformed" in reason and len(reason) < 300


def test_normalize_allowed_origins() -> None:
    assert normalize_allowed_origins(None) is None
    assert normalize_allowed_origins("*") is ANY_ORIGIN
    assert normalize_allowed_origins(" * ") is ANY_ORIGIN
    assert normalize_allowed_origins(["https://a.example", "*"]) is ANY_ORIGIN
    assert normalize_allowed_origins([]) == frozenset()
    assert normalize_allowed_origins("https://a.example") == frozenset({"https://a.example"})
    assert normalize_allowed_origins(
        [
            "HTTPS://App.Example.com:443/",
            "http://LOCALHOST:80",
            "http://localhost:3000",
            "https://app.example.com:8443",
            "http://[0:0:0:0:0:0:0:1]:8000",
            "null",
            "NULL",
        ]
    ) == frozenset(
        {
            "https://app.example.com",
            "http://localhost",
            "http://localhost:3000",
            "https://app.example.com:8443",
            "http://[::1]:8000",
            "null",
        }
    )
    # any iterable of str: a tuple, a set, a generator
    assert normalize_allowed_origins(("https://a.example",)) == frozenset({"https://a.example"})
    assert normalize_allowed_origins({"https://a.example"}) == frozenset({"https://a.example"})
    assert normalize_allowed_origins(o for o in ["https://a.example"]) == frozenset({"https://a.example"})


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(5, TypeError, id="int"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param(b"https://a.example", TypeError, id="bytes"),
        pytest.param([b"https://a.example"], TypeError, id="bytes-item"),
        pytest.param([None], TypeError, id="none-item"),
        pytest.param(["https://a.example", 3], TypeError, id="int-item"),
        pytest.param({"https://a.example": 1}, TypeError, id="dict"),
        pytest.param("app.example.com", ValueError, id="no-scheme"),
        pytest.param(["localhost:3000"], ValueError, id="host-port-no-scheme"),
        pytest.param("https://a.example/app", ValueError, id="path"),
        pytest.param("https://a.example?x=1", ValueError, id="query"),
        pytest.param("https://a.example#top", ValueError, id="fragment"),
        pytest.param("https://user@a.example", ValueError, id="userinfo"),
        pytest.param("https://a.example:0", ValueError, id="port-0"),
        pytest.param("https://a.example:65536", ValueError, id="port-too-big"),
        pytest.param("https://", ValueError, id="no-host"),
        pytest.param("", ValueError, id="empty"),
        pytest.param("https://bücher.example", ValueError, id="not-ascii"),
        pytest.param(["*", "a.example"], ValueError, id="typo-beside-any"),
    ],
)
def test_a_bad_setting_is_refused_with_a_message_naming_it(value: Any, error: type) -> None:
    with pytest.raises(error) as raised:
        normalize_allowed_origins(value)
    assert "allowed_origins" in str(raised.value)


# ============================================================================ both servers

KEY = base64.b64encode(os.urandom(16)).decode()


async def upgrade(port: int, host: str, origins: Sequence[str] = (), path: str = "/ws") -> Tuple[int, bytes]:
    """A raw upgrade request to 127.0.0.1:``port`` with this ``Host`` and these ``Origin`` headers: (status, body)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *(f"Origin: {origin}" for origin in origins),
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        body = b""
        if status != 101:
            length = [
                line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            ]
            if length:
                body = await asyncio.wait_for(reader.readexactly(int(length[0])), 10)
            else:
                body = await read_to_eof(reader)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):  # the server dropped it first
            pass
    return status, body


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    data = b""
    for _ in range(1000):  # bounded: the server closes long before
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server never closed")


#: Per setting of ``allowed_origins``: (what the request says, its Origin, its Host, the status expected).
#: ``{port}`` is the server's port, ``{other}`` another port of 127.0.0.1 (another origin).
Row = Tuple[str, Optional[str], str, int]
TABLES: List[Tuple[str, Allowed, List[Row]]] = [
    (
        "default",
        None,
        [
            ("no Origin (not a browser)", None, "127.0.0.1:{port}", 101),
            ("same origin", "http://127.0.0.1:{port}", "127.0.0.1:{port}", 101),
            ("same origin, an https page", "https://127.0.0.1:{port}", "127.0.0.1:{port}", 101),
            ("same origin, by name", "http://localhost:{port}", "localhost:{port}", 101),
            ("same origin, another case", "HTTP://LocalHost:{port}", "LOCALHOST:{port}", 101),
            ("the Host it was reached at (a virtual host)", "https://api.example.com", "api.example.com", 101),
            ("another port", "http://127.0.0.1:{other}", "127.0.0.1:{port}", 403),
            ("another site", "https://evil.example", "127.0.0.1:{port}", 403),
            ("the opaque origin", "null", "127.0.0.1:{port}", 403),
            ("a malformed Origin", "127.0.0.1:{port}", "127.0.0.1:{port}", 403),
        ],
    ),
    (
        "listed",
        ["http://app.example.com:3000"],
        [
            ("a listed origin", "http://app.example.com:3000", "127.0.0.1:{port}", 101),
            ("a listed origin, another case", "HTTP://APP.example.com:3000", "127.0.0.1:{port}", 101),
            ("the same origin stays allowed", "http://127.0.0.1:{port}", "127.0.0.1:{port}", 101),
            ("no Origin", None, "127.0.0.1:{port}", 101),
            ("a listed host on another port", "http://app.example.com:3001", "127.0.0.1:{port}", 403),
            ("a listed host with another scheme", "https://app.example.com:3000", "127.0.0.1:{port}", 403),
            ("another site", "https://evil.example", "127.0.0.1:{port}", 403),
            ("the opaque origin", "null", "127.0.0.1:{port}", 403),
        ],
    ),
    (
        "any",
        "*",
        [
            ("another site", "https://evil.example", "127.0.0.1:{port}", 101),
            ("another port", "http://127.0.0.1:{other}", "127.0.0.1:{port}", 101),
            ("the opaque origin", "null", "127.0.0.1:{port}", 101),
            ("same origin", "http://127.0.0.1:{port}", "127.0.0.1:{port}", 101),
            ("no Origin", None, "127.0.0.1:{port}", 101),
        ],
    ),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("allowed", "rows"), [pytest.param(a, r, id=name) for name, a, r in TABLES])
async def test_each_server_applies_the_rule(server_kind: str, allowed: Allowed, rows: List[Row]) -> None:
    """Accepted: 101. Refused: 403 whose body holds the reason ``origin_refusal`` gives."""
    normalized = normalize_allowed_origins(allowed)
    with serve_methods(server_kind, ServerMethods(), allowed_origins=allowed) as srv:
        port, other = srv.port, (srv.port + 1) % 65536 or 1
        wrong = []
        for what, origin_template, host_template, expected in rows:
            origin = None if origin_template is None else origin_template.format(port=port, other=other)
            host = host_template.format(port=port)
            status, body = await upgrade(port, host, [] if origin is None else [origin])
            reason = origin_refusal(origin, host, normalized)
            if status != expected:
                wrong.append(f"{what} (Origin {origin}, Host {host}): HTTP {status}, expected {expected}; {body!r}")
            elif expected == 403 and (reason is None or reason.encode() not in body):
                wrong.append(f"{what}: the 403's body {body!r} does not hold the reason {reason!r}")
        assert not wrong, "\n".join(wrong)


class Records(logging.Handler):
    """INFO and above of the ``fastwsrpc`` loggers, whatever the logging mode (attached to them directly)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def fastwsrpc_logs() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger("fastwsrpc")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.e2e
async def test_a_refusal_is_logged_once_at_info(server_kind: str, fastwsrpc_logs: Records) -> None:
    with serve_methods(server_kind, ServerMethods()) as srv:
        status, _ = await upgrade(srv.port, f"127.0.0.1:{srv.port}", ["https://evil.example"])
        assert status == 403

        def about_it() -> List[logging.LogRecord]:
            return [r for r in fastwsrpc_logs.records if "evil.example" in r.getMessage()]

        await eventually(lambda: bool(about_it()))
        assert [r.levelno for r in about_it()] == [logging.INFO], [r.getMessage() for r in about_it()]
        # the line says what was refused and why
        assert "not allowed" in about_it()[0].getMessage()


@pytest.mark.e2e
async def test_two_origin_headers_are_refused(server_kind: str) -> None:
    """RFC 6454 section 7.3: a user agent sends one Origin; several are not trusted (403, or 400 from the parser)."""
    with serve_methods(server_kind, ServerMethods(), allowed_origins=["https://app.example.com"]) as srv:
        status, _ = await upgrade(
            srv.port, f"127.0.0.1:{srv.port}", ["https://app.example.com", "https://evil.example"]
        )
        assert status in (400, 403)
        status, _ = await upgrade(srv.port, f"127.0.0.1:{srv.port}", ["https://app.example.com"])
        assert status == 101


async def test_a_bad_setting_fails_at_construction_on_both_servers() -> None:
    for build in (WebSocketRpcEndpoint, WebSocketRpcServer):
        with pytest.raises(ValueError, match="allowed_origins"):
            build(ServerMethods(), allowed_origins="app.example.com")
        with pytest.raises(TypeError, match="allowed_origins"):
            build(ServerMethods(), allowed_origins=cast(Any, [42]))


@pytest.mark.e2e
async def test_the_endpoint_checks_in_main_loop_on_a_route_of_ones_own() -> None:
    """``main_loop`` from a user's own route (path parameters) refuses the same way."""
    endpoint = WebSocketRpcEndpoint(ServerMethods())
    app = FastAPI()

    @app.websocket("/rooms/{client_id}")
    async def room(websocket: WebSocket, client_id: str) -> None:
        await endpoint.main_loop(websocket, client_id)

    with ServerThread(app) as srv:
        host = f"127.0.0.1:{srv.port}"
        assert (await upgrade(srv.port, host, ["https://evil.example"], "/rooms/alice"))[0] == 403
        assert (await upgrade(srv.port, host, [f"http://{host}"], "/rooms/alice"))[0] == 101


@pytest.mark.e2e
async def test_the_native_server_refuses_before_authenticate() -> None:
    """A cross-site page's handshake never reaches ``authenticate=`` (which might act on its cookies)."""
    seen: List[HandshakeRequest] = []

    async def authenticate(request: HandshakeRequest) -> None:
        seen.append(request)

    with NativeServerThread(WebSocketRpcServer(ServerMethods(), authenticate=authenticate)) as srv:
        host = f"127.0.0.1:{srv.port}"
        assert (await upgrade(srv.port, host, ["https://evil.example"]))[0] == 403
        assert seen == []
        assert (await upgrade(srv.port, host, [f"http://{host}"]))[0] == 101
        assert len(seen) == 1


# ============================================================================ in Chromium

#: The page both servers' tests load: it tries one WebSocket and tells how it went.
PROBE_PAGE = "<!doctype html><title>origin probe</title><p>origin probe</p>"
#: Open ``url``; answer the events seen, in order: "open", "answer <result>", "error", "close <code>".
PROBE = """
const events = [];
await new Promise((resolve) => {
  const ws = new WebSocket(%s);
  ws.onopen = () => {
    events.push("open");
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "add", params: { a: 20, b: 22 } }));
  };
  ws.onmessage = (e) => { events.push("answer " + JSON.parse(e.data).result); ws.close(1000); };
  ws.onerror = () => events.push("error");
  ws.onclose = (e) => { events.push("close " + e.code); resolve(); };
});
return events;
"""


def page_app(ws_endpoint: Optional[WebSocketRpcEndpoint] = None) -> FastAPI:
    """An app serving the probe page at ``/``, and ``ws_endpoint`` at ``/ws`` if given (a same-origin page)."""
    app = FastAPI()

    @app.get("/", response_class=HTMLResponse)
    async def probe_page() -> HTMLResponse:
        return HTMLResponse(PROBE_PAGE)

    if ws_endpoint is not None:
        ws_endpoint.register_route(app, "/ws")
    return app


def try_websocket(tab: Tab, page_url: str, ws_url: str) -> List[str]:
    tab.open(page_url)
    return cast(List[str], tab.run(PROBE % f'"{ws_url}"'))


def sent_origins(tab: Tab, ws_url: str) -> List[Optional[str]]:
    """The Origin headers Chromium says it sent in its handshakes to ``ws_url`` (Network domain events)."""
    origins = []
    for event in tab.browser.events:
        if event.get("sessionId") == tab.session and event["method"] == "Network.webSocketWillSendHandshakeRequest":
            headers = {k.lower(): v for k, v in event["params"]["request"]["headers"].items()}
            origins.append(headers.get("origin"))
    return origins


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


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    page = Tab(browser)
    browser.send("Network.enable", page.session)
    try:
        yield page
    finally:
        page.close()


REFUSED = ["error", "close 1006"]
ACCEPTED = ["open", "answer 42", "close 1000"]


@pytest.mark.e2e
def test_chromium_a_page_of_another_origin_is_refused_by_the_endpoint(tab: Tab) -> None:
    with ServerThread(page_app(WebSocketRpcEndpoint(ServerMethods()))) as srv, ServerThread(page_app()) as elsewhere:
        ws_url = srv.url("/ws")
        assert try_websocket(tab, srv.url("/", scheme="http"), ws_url) == ACCEPTED  # the same origin
        assert try_websocket(tab, elsewhere.url("/", scheme="http"), ws_url) == REFUSED  # another port
        assert sent_origins(tab, ws_url) == [f"http://127.0.0.1:{srv.port}", f"http://127.0.0.1:{elsewhere.port}"]


@pytest.mark.e2e
def test_chromium_a_listed_origin_is_accepted_by_the_endpoint(tab: Tab) -> None:
    with ServerThread(page_app()) as elsewhere:
        listed = elsewhere.url("/", scheme="http").rstrip("/")
        with ServerThread(page_app(WebSocketRpcEndpoint(ServerMethods(), allowed_origins=[listed]))) as srv:
            assert try_websocket(tab, elsewhere.url("/", scheme="http"), srv.url("/ws")) == ACCEPTED


@pytest.mark.e2e
def test_chromium_a_page_of_another_origin_is_refused_by_the_native_server(tab: Tab) -> None:
    """The native server serves no pages: the page comes from another port, refused, then accepted once listed."""
    with ServerThread(page_app()) as pages:
        page_url = pages.url("/", scheme="http")
        with NativeServerThread(WebSocketRpcServer(ServerMethods())) as srv:
            assert try_websocket(tab, page_url, srv.url("/ws")) == REFUSED
        listed = WebSocketRpcServer(ServerMethods(), allowed_origins=[page_url.rstrip("/")])
        with NativeServerThread(listed) as srv:
            assert try_websocket(tab, page_url, srv.url("/ws")) == ACCEPTED
