"""The fastwsrpc command, against a real server on a free loopback port.

Most tests run ``cli.main()`` in-process (the server has a thread and event loop
of its own, so it is a real network round trip all the same); the ones about
how the program starts (``python -m fastwsrpc``, ``serve``) run a subprocess as
a user would. Every exit code is covered: 0 ok, 1 JSON-RPC error, 2 usage,
3 connection or timeout.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any, List, Optional, Tuple

import pytest

import fastwsrpc
from fastwsrpc import RpcRetryConfig, WebSocketRpcClient, cli
from fastwsrpc.errors import RpcConnectionError, RpcHandshakeRejectedError, RpcUsageError

from .support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Names a user must never see: they did not write the code that raised them.
INTERNAL_NAMES = (
    "InvalidStatus",
    "InvalidURI",
    "InvalidMessage",
    "gaierror",
    "ConnectionRefusedError",
    "OSError",
    "TimeoutError",
    "RpcTimeoutError",
    "RpcConnectionError",
    "RpcHandshakeRejectedError",
    "Traceback",
)

pytestmark = pytest.mark.e2e


def run(capsys: Any, *args: str, stdin: Optional[str] = None, monkeypatch: Any = None) -> Tuple[int, str, str]:
    """``fastwsrpc ARGS`` in-process: (exit code, stdout, stderr), whether it returns or exits."""
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse exits by itself on usage errors, --help and --version
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    for name in INTERNAL_NAMES:
        assert name not in err, f"internal name {name!r} shown to the user: {err}"
    return code, out, err


def subprocess_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastwsrpc", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def closed_port_url() -> str:
    """A loopback URL nobody listens on (the port was free a moment ago)."""
    return f"ws://127.0.0.1:{free_port()}/ws"


# ---------------------------------------------------------------- exit 0
def test_call_named_positional_and_json_params(capsys: Any, url: str) -> None:
    assert run(capsys, "call", url, "add", "a=1", "b=2")[:2] == (0, "3\n")
    code, out, _ = run(capsys, "call", url, "subtract", "42", "23")
    assert (code, json.loads(out)) == (0, 19)
    code, out, _ = run(capsys, "call", url, "concat", "a=hello", 'b=" world"')
    assert (code, json.loads(out)) == (0, "hello world")
    code, out, _ = run(capsys, "call", url, "total", "--params", '{"items": [{"name": "a", "price": 2.5}]}')
    assert (code, json.loads(out)) == (0, 2.5)
    code, out, _ = run(capsys, "call", url, "user", "--pretty")
    assert code == 0 and json.loads(out) == {"name": "ada", "tags": ["x", "y"]} and "\n  " in out


def test_params_dash_reads_standard_input(capsys: Any, monkeypatch: Any, url: str) -> None:
    code, out, _ = run(capsys, "call", url, "subtract", "--params", "-", stdin="[10, 4]\n", monkeypatch=monkeypatch)
    assert (code, json.loads(out)) == (0, 6)
    code, out, _ = run(capsys, "call", url, "add", "--params", "-", stdin='{"a": 2, "b": 3}', monkeypatch=monkeypatch)
    assert (code, json.loads(out)) == (0, 5)


def test_notify_sends_and_exits_0_with_no_output(capsys: Any, url: str) -> None:
    assert run(capsys, "call", url, "record", "key=cli-notify", "value=1", "--notify") == (0, "", "")


def test_a_notification_runs_even_though_the_command_closes_at_once(capsys: Any, url: str) -> None:
    key = f"key=cli-notify-{url}"  # both servers share this process's RECORDED
    for _ in range(5):
        assert run(capsys, "call", url, "record", key, "value=1", "--notify")[0] == 0
    # Read back on a new connection: each notification was sent before its connection closed.
    code, out, _ = run(capsys, "call", url, "recorded", key)
    assert code == 0 and json.loads(out) == [1] * 5


def test_header_option_authenticates_the_handshake(capsys: Any, server: Any) -> None:
    secure = server.url("/secure")
    code, _, err = run(capsys, "call", secure, "add", "a=1", "b=2")
    assert code == 3 and "HTTP 403" in err
    code, out, _ = run(capsys, "call", secure, "add", "a=1", "b=2", "--header", "X-Token: let-me-in")
    assert (code, out) == (0, "3\n")
    # repeatable, and the short form
    code, out, _ = run(capsys, "call", secure, "add", "a=1", "b=2", "-H", "X-Other: 1", "-H", "x-token:let-me-in")
    assert (code, out) == (0, "3\n")
    code, out, _ = run(capsys, "methods", secure, "--header", "X-Token: let-me-in")
    assert code == 0 and out.startswith("add(")


def test_version_names_the_active_implementation() -> None:
    done = subprocess_cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"fastwsrpc {fastwsrpc.__version__} ({fastwsrpc.IMPLEMENTATION} implementation")


def test_every_option_has_help_and_meaningful_defaults_are_shown(capsys: Any) -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"call", "methods", "serve", "subscribe"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
    expected = {
        "call": ["(default: 30.0)", "(default: 10.0)", "--header", "--params JSON", "standard input"],
        "methods": ["(default: 30.0)", "(default: 10.0)", "--header", "--json"],
        "subscribe": ["(default: 30.0)", "(default: 10.0)", "--header", "--on-slow", "--count N", "Ctrl-C"],
        "serve": [
            "(default: 127.0.0.1)",
            "(default: 9000)",
            "(default: /ws)",
            "(default: info)",
            "--drain-timeout SECONDS",
            "--workers N",
            "--broker URL",
        ],
    }
    for name, fragments in expected.items():
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and out.startswith(f"usage: fastwsrpc {name}")
        text = " ".join(out.split())  # argparse wraps lines wherever the terminal width puts them
        for fragment in fragments:
            assert fragment in text, (name, fragment)
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--version" in out and "Exit codes" in out and "subscribe" in out


# ---------------------------------------------------------------- exit 1
def test_remote_error_exits_1_with_the_error_on_stderr(capsys: Any, url: str) -> None:
    code, out, err = run(capsys, "call", url, "no_such_method")
    assert (code, out) == (1, "") and json.loads(err)["code"] == -32601
    code, _, err = run(capsys, "call", url, "make_point", "x=one", "y=2")
    assert code == 1 and json.loads(err)["data"]["path"] == "$.x"


def test_methods_without_discovery_exits_1(capsys: Any, server: Any) -> None:
    code, out, err = run(capsys, "methods", server.url("/hidden"))
    assert (code, out) == (1, "") and "rpc.discover" in err


# ---------------------------------------------------------------- exit 2
@pytest.mark.parametrize(
    "bad_url, message",
    [
        ("http://127.0.0.1:{port}/ws", "did you mean ws://127.0.0.1:{port}/ws"),
        ("https://127.0.0.1:{port}/ws", "did you mean wss://"),
        ("notaurl", "must start with ws:// or wss://"),
        ("ws:///ws", "has no host"),
        ("ws://127.0.0.1:99999/ws", "invalid URL"),
    ],
)
def test_a_url_that_is_not_a_websocket_address_is_a_usage_error(
    capsys: Any, server: Any, bad_url: str, message: str
) -> None:
    bad_url, message = bad_url.format(port=server.port), message.format(port=server.port)
    for command in (["call", bad_url, "add"], ["methods", bad_url]):
        code, out, err = run(capsys, *command)
        assert (code, out) == (2, "") and message in err and err.startswith("usage: fastwsrpc")


@pytest.mark.parametrize(
    "params, message",
    [
        ("{bad", "--params is not valid JSON"),
        ("", "--params is not valid JSON"),
        ("5", "not a number"),
        ('"text"', "not a string"),
        ("null", "not null"),
        ("true", "not a boolean"),
    ],
)
def test_params_that_are_not_an_object_or_array_are_refused_before_connecting(
    capsys: Any, params: str, message: str
) -> None:
    # Against a closed port: exit 2 (not 3) proves nothing was tried on the network.
    code, _, err = run(capsys, "call", closed_port_url(), "add", "--params", params)
    assert code == 2 and "--params" in err and message in err


def test_bad_params_from_stdin_name_their_source(capsys: Any, monkeypatch: Any) -> None:
    code, _, err = run(capsys, "call", closed_port_url(), "add", "--params", "-", stdin="[1,", monkeypatch=monkeypatch)
    assert code == 2 and "--params - (standard input) is not valid JSON" in err


def test_other_usage_errors_exit_2_before_connecting(capsys: Any) -> None:
    url = closed_port_url()
    for args, message in (
        (["call", url, "add", "a=1", "2"], "either all key=value"),
        (["call", url, "add", "a=1", "--params", "{}"], "not both"),
        (["call", url, "add", "--header", "no colon here"], "expected 'Name: value'"),
        (["call", url, "add", "--header", ": empty name"], "expected 'Name: value'"),
        (["methods", url, "-H", "bad name: x"], "expected 'Name: value'"),
        (["call", url], "required"),
        (["nonsense"], "invalid choice"),
    ):
        code, _, err = run(capsys, *args)
        assert code == 2 and message in err, (args, err)


# ---------------------------------------------------------------- exit 3
def test_connection_refused(capsys: Any) -> None:
    url = closed_port_url()
    for command in (["call", url, "add"], ["methods", url]):
        code, out, err = run(capsys, *command)
        assert (code, out) == (3, "") and "connection refused by 127.0.0.1:" in err


def test_connection_refused_on_every_address_of_a_name(capsys: Any) -> None:
    # localhost may resolve to ::1 and 127.0.0.1: asyncio then joins both refusals in one error
    code, _, err = run(capsys, "call", f"ws://localhost:{free_port()}/ws", "add")
    assert code == 3 and "connection refused by localhost:" in err


def test_unresolvable_host(capsys: Any) -> None:
    # .invalid never resolves (RFC 2606)
    code, _, err = run(capsys, "call", "ws://no-such-host.invalid/ws", "add", "--connect-timeout", "20")
    assert code == 3 and "could not resolve host 'no-such-host.invalid'" in err


def test_handshake_refused_with_http_status(capsys: Any, server: Any) -> None:
    code, out, err = run(capsys, "call", server.url("/secure"), "add")
    assert (code, out) == (3, "") and "the server refused the handshake with HTTP 403" in err


def test_plain_server_spoken_to_with_tls(capsys: Any, server: Any) -> None:
    code, _, err = run(capsys, "call", server.url("/ws", scheme="wss"), "add")
    assert code == 3 and "TLS handshake" in err


def test_not_a_websocket_server(capsys: Any) -> None:
    # A TCP server that answers the handshake with something that is not HTTP.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        import threading

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        code, _, err = run(capsys, "call", f"ws://127.0.0.1:{port}/ws", "add")
        thread.join(10)
    assert code == 3 and "did not complete a WebSocket handshake" in err


def test_connection_lost_mid_call_exits_3(capsys: Any, server: Any) -> None:
    # /small closes a connection that sends a frame over 4096 bytes (code 1009).
    code, out, err = run(capsys, "call", server.url("/small"), "echo", "text=" + "x" * 5000)
    assert (code, out) == (3, "") and "connection lost" in err and "1009" in err


def test_call_timeout_exits_3(capsys: Any, url: str) -> None:
    code, out, err = run(capsys, "call", url, "sleep", "seconds=60", "key=cli-timeout", "--timeout", "0.05")
    assert (code, out) == (3, "") and "no answer within 0.05 s" in err


# ------------------------------------------------- the client's own error classes
@pytest.mark.parametrize(
    "exc, expected",
    [
        (RpcHandshakeRejectedError(401), (3, "refused the handshake with HTTP 401 (authentication required")),
        (RpcHandshakeRejectedError(404), (3, "refused the handshake with HTTP 404 (no endpoint at this path)")),
        (RpcHandshakeRejectedError(503), (3, "HTTP 503 (a server error")),
        (RpcUsageError("unsupported scheme"), (2, "invalid URL")),
    ],
)
def test_describe_failure_of_library_errors(exc: BaseException, expected: Tuple[int, str]) -> None:
    code, message = cli.describe_failure(exc, "ws://example.test:8080/ws", connected=False, timeout=30)
    assert code == expected[0] and expected[1] in message


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        raise outer from cause
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    "cause, expected",
    [
        (ConnectionRefusedError(111, "Connect call failed"), "connection refused by example.test:8080"),
        (
            OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1), [Errno 111] Connect call failed"),
            "connection refused",
        ),
        (socket.gaierror(-2, "Name or service not known"), "could not resolve host 'example.test'"),
        (TimeoutError(), "timed out connecting to example.test:8080"),
        (OSError(113, "No route to host"), "could not connect to example.test:8080: No route to host"),
    ],
)
def test_describe_failure_reads_the_chained_cause(cause: BaseException, expected: str) -> None:
    exc = chained(RpcConnectionError("could not connect"), cause)
    code, message = cli.describe_failure(exc, "ws://example.test:8080/ws", connected=False, timeout=30)
    assert code == 3 and expected in message
    for name in INTERNAL_NAMES:
        assert name not in message


# ---------------------------------------------------------------- methods
def test_methods_lists_signatures_with_types_and_plain_summaries(capsys: Any, url: str) -> None:
    code, out, _ = run(capsys, "methods", url)
    assert code == 0
    lines: List[str] = out.splitlines()
    assert "add(a: int, b: int) -> int" in lines
    total = lines.index("total(items: list[Item], discount?: float | None) -> float")
    assert lines[total + 1] == "    Sum of the prices."
    call_me_back = next(i for i, line in enumerate(lines) if line.startswith("call_me_back("))
    assert lines[call_me_back + 1].startswith("    Call method_name on the caller")  # ``method_name`` in the source
    assert "`" not in out
    code, out, _ = run(capsys, "methods", url, "--json")
    assert code == 0 and json.loads(out)["openrpc"].startswith("1.")


def test_plain_text_of_rest_markup() -> None:
    assert cli.plain_text("Call ``x`` then :meth:`~fastwsrpc.RpcChannel.call` or :class:`RpcChannel`.") == (
        "Call x then call or RpcChannel."
    )
    assert cli.plain_text("See `the spec <https://www.jsonrpc.org>`_, **bold** and *emphasis*::") == (
        "See the spec, bold and emphasis:"
    )
    assert cli.plain_text("f(*args, **kwargs) keeps its stars") == "f(*args, **kwargs) keeps its stars"


def test_schema_types() -> None:
    assert cli.schema_type({}) == "any"
    assert cli.schema_type({"type": "array", "items": {"$ref": "#/$defs/Item"}}) == "list[Item]"
    assert cli.schema_type({"anyOf": [{"type": "number"}, {"type": "null"}]}) == "float | None"
    assert cli.schema_type({"type": ["string", "null"]}) == "str | None"
    assert cli.schema_type({"type": "object", "additionalProperties": {"type": "integer"}}) == "dict[str, int]"
    assert cli.schema_type({"enum": ["a", "b"]}) == '"a" | "b"'


# ---------------------------------------------------------------- serve
def test_serve_a_methods_class_then_call_it(capsys: Any) -> None:
    port = free_port()
    command = [sys.executable, "-m", "fastwsrpc", "serve", "tests.app:ServerMethods", "--port", str(port)]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert f"serving tests.app:ServerMethods on ws://127.0.0.1:{port}/ws" in proc.stdout.readline()
            for line in proc.stderr:  # the native server logs this once the socket listens
                if "listening on ws://" in line:
                    break
            else:
                pytest.fail("the server exited before listening")
            code, out, _ = run(capsys, "call", f"ws://127.0.0.1:{port}/ws", "add", "a=20", "b=22")
            assert (code, out) == (0, "42\n")
        finally:
            proc.terminate()
            proc.communicate(timeout=10)  # drains and closes the pipes
    code, _, err = run(capsys, "serve", "tests.app:NoSuchThing")
    assert code == 2 and "cannot serve tests.app:NoSuchThing" in err
    code, _, err = run(capsys, "serve", "tests.app")
    assert code == 2 and "expected module:Class" in err


# ---------------------------------------------------------------- serve
@pytest.mark.e2e
@pytest.mark.parametrize("flags", [[], ["--asgi"]], ids=["native", "asgi"])
async def test_serve_runs_a_methods_class_on_either_server(flags: List[str]) -> None:
    port = free_port()
    command = [sys.executable, "-m", "fastwsrpc", "serve", "tests.app:ServerMethods", "--port", str(port), *flags]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        retry = RpcRetryConfig(max_attempts=100, min_wait=0.05, max_wait=0.1)  # until the process listens
        async with WebSocketRpcClient(f"ws://127.0.0.1:{port}/ws", retry_config=retry) as client:
            assert (await client.other.add(a=20, b=22)).result == 42
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert out.startswith(f"serving tests.app:ServerMethods on ws://127.0.0.1:{port}/ws")
