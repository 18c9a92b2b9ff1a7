"""The ``fastwsrpc`` command: call a server, list its methods, serve a methods class.

    fastwsrpc call ws://127.0.0.1:9000/ws add a=1 b=2     # named params (values are JSON, else strings)
    fastwsrpc call ws://127.0.0.1:9000/ws subtract 42 23  # positional params
    fastwsrpc call URL add --params '{"a": 1, "b": 2}'    # params as one JSON object or array
    echo '[42, 23]' | fastwsrpc call URL subtract --params -
    fastwsrpc call URL whoami --header 'Authorization: Bearer TOKEN'
    fastwsrpc methods ws://127.0.0.1:9000/ws              # via rpc.discover
    fastwsrpc serve mypackage.module:MyMethods --port 9000
    fastwsrpc --version                                   # version and active implementation

Exit codes: 0 success; 1 the server answered with a JSON-RPC error (printed to
stderr as JSON); 2 bad usage (checked before connecting); 3 no connection,
connection lost, or timeout.

Messages name what went wrong in the user's terms ("connection refused", "the
server refused the handshake with HTTP 403"), never an exception class: the
person at the terminal did not write the code that raised it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import json
import re
import socket
import ssl
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

EXIT_OK = 0
EXIT_REMOTE_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3

#: ``websockets``' own default for the opening handshake; a CLI user may want less.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CALL_TIMEOUT = 30.0


class UsageError(ValueError):
    """A command line that cannot work whatever the server does: exit 2 before connecting."""


# --------------------------------------------------------------------- arguments
def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: Sequence[str], params_json: Optional[str], stdin: Any = None) -> Any:
    """``a=1 b=x`` -> {"a": 1, "b": "x"}; ``1 2`` -> [1, 2]; ``--params JSON`` (``-``: stdin) -> that.

    JSON-RPC params are by-name (an object) or by-position (an array) and nothing
    else, so anything else is refused here rather than sent for the server to refuse.
    """
    if params_json is not None:
        if items:
            raise UsageError("give params either as arguments or with --params, not both")
        source = "--params"
        if params_json == "-":
            params_json = (stdin or sys.stdin).read()
            source = "--params - (standard input)"
        try:
            params = json.loads(params_json)
        except ValueError as exc:
            raise UsageError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(params, (dict, list)):
            raise UsageError(
                f"{source} must be a JSON object (named params) or array (positional params), not {_json_kind(params)}"
            )
        return params
    if not items:
        return None
    named = [item.partition("=") for item in items]
    if all(sep for _, sep, _ in named):
        return {key: _value(value) for key, _, value in named}
    if any(sep for _, sep, _ in named):
        raise UsageError("params are either all key=value (named) or all values (positional)")
    return [_value(item) for item in items]


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string"


def check_url(url: str) -> str:
    """Refuse what can never be a WebSocket address before any connection is tried.

    A typo'd scheme or a missing host is the user's mistake, not the network's:
    it must exit 2 at once, not 3 after a connect attempt.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        hint = ""
        if parts.scheme in ("http", "https"):
            hint = f" (did you mean {'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path}?)"
        raise UsageError(f"invalid URL {url!r}: it must start with ws:// or wss://{hint}")
    if not parts.hostname:
        raise UsageError(f"invalid URL {url!r}: it has no host")
    return url


def parse_headers(items: Sequence[str]) -> List[Tuple[str, str]]:
    """``'Name: value'`` strings -> (name, value) pairs for the handshake request."""
    headers: List[Tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise UsageError(f"--header {item!r}: expected 'Name: value' (for example 'Authorization: Bearer TOKEN')")
        headers.append((name, value.strip()))
    return headers


# --------------------------------------------------------------------- failures
def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then its causes and contexts: the client wraps the socket's errors."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _handshake_status(exc: BaseException) -> Optional[int]:
    from websockets.exceptions import InvalidStatus

    from .errors import RpcHandshakeRejectedError

    if isinstance(exc, RpcHandshakeRejectedError):
        return int(exc.status)
    if isinstance(exc, InvalidStatus):  # what websockets raises, before the client wraps it
        return int(exc.response.status_code)
    return None


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.TimeoutError, TimeoutError))


def _refused(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionRefusedError):
        return True
    # asyncio joins the failures of every address of a host (::1 and 127.0.0.1
    # for localhost) into one OSError("Multiple exceptions: ...").
    text = str(exc)
    return (
        isinstance(exc, OSError)
        and text.startswith("Multiple exceptions")
        and (text.count(f"[Errno {errno.ECONNREFUSED}]") == text.count("[Errno "))
    )


def describe_failure(exc: BaseException, url: str, connected: bool, timeout: Optional[float]) -> Tuple[int, str]:
    """The exit code and the one-line message for a failure other than a JSON-RPC error."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

    from .errors import RpcChannelClosedError, RpcError, RpcUsageError

    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"
    chain = list(_chain(exc))
    for err in chain:
        if isinstance(err, (RpcUsageError, InvalidURI)):
            return EXIT_USAGE, f"invalid URL {url!r}: {err}"
    for err in chain:
        status = _handshake_status(err)
        if status is not None:
            hint = {
                401: " (authentication required: pass a token with --header)",
                403: " (not authorised, or no endpoint at this path)",
                404: " (no endpoint at this path)",
            }.get(status, " (a server error; try again later)" if status >= 500 else "")
            return EXIT_CONNECTION, f"the server refused the handshake with HTTP {status}{hint}"
    for err in chain:
        if isinstance(err, socket.gaierror):
            return EXIT_CONNECTION, f"could not resolve host {parts.hostname!r}"
        if isinstance(err, ssl.SSLCertVerificationError):
            return EXIT_CONNECTION, f"TLS certificate verification failed for {where}: {err.verify_message}"
        if isinstance(err, ssl.SSLError):
            hint = (
                " (is the server speaking TLS? use ws:// for plain connections)"
                if err.reason == "WRONG_VERSION_NUMBER"
                else ""
            )
            return EXIT_CONNECTION, f"TLS handshake with {where} failed: {err.reason or err}{hint}"
        if _refused(err):
            return EXIT_CONNECTION, f"connection refused by {where} (is the server running?)"
    for err in chain:
        if _is_timeout(err):
            if not connected:
                return EXIT_CONNECTION, f"timed out connecting to {where}"
            return EXIT_CONNECTION, f"no answer within {timeout:g} s" if timeout else "timed out waiting for the answer"
        if isinstance(err, RpcChannelClosedError):
            return EXIT_CONNECTION, f"connection lost: {err}"
        if isinstance(err, ConnectionClosed):
            return EXIT_CONNECTION, f"the connection was lost before the answer arrived ({err})"
        if isinstance(err, InvalidHandshake):  # after InvalidStatus above: an answer, but not a WebSocket one
            return EXIT_CONNECTION, f"{where} did not complete a WebSocket handshake (is this a WebSocket endpoint?)"
    for err in chain:
        if isinstance(err, OSError) and not isinstance(err, RpcError):  # the socket's own error says most
            return EXIT_CONNECTION, f"could not connect to {where}: {err.strerror or err}"
    text = str(exc) or "connection failed"
    if isinstance(exc, RpcError):
        return EXIT_CONNECTION, text
    return EXIT_CONNECTION, f"unexpected failure: {text}"


def _print_json(value: Any, pretty: bool, stream: Any = None) -> None:
    from .protocol import encode

    text = encode(value).decode()
    if pretty:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    print(text, file=stream or sys.stdout)


def _print_remote_error(code: Any, message: Any, data: Any, pretty: bool) -> int:
    _print_json({"code": code, "message": message, "data": data}, pretty, sys.stderr)
    return EXIT_REMOTE_ERROR


def _fail(code: int, message: str) -> int:
    print(f"fastwsrpc: {message}", file=sys.stderr)
    return code


def _client(args: argparse.Namespace) -> Any:
    from . import RpcMethodsBase, WebSocketRpcClient

    options: Dict[str, Any] = {"open_timeout": args.connect_timeout}
    if args.header_pairs:
        options["additional_headers"] = args.header_pairs
    # No retries: at a terminal, an answer now beats ten attempts over minutes.
    return WebSocketRpcClient(args.url, RpcMethodsBase(), retry_config=False, **options)


# --------------------------------------------------------------------- commands
async def _call(args: argparse.Namespace) -> int:
    from .errors import RemoteValueError

    connected = False
    try:
        async with _client(args) as client:
            connected = True
            if args.notify:
                await client.notify(args.method, args.params_value)
                return EXIT_OK
            response = await client.call(args.method, args.params_value, timeout=args.timeout)
    except RemoteValueError as exc:
        return _print_remote_error(exc.code, exc.message, exc.data, args.pretty)
    except Exception as exc:
        return _fail(*describe_failure(exc, args.url, connected, args.timeout))
    error = getattr(response, "error", None)
    if error is not None:  # a client built with raise_on_error=False answers instead of raising
        return _print_remote_error(error.code, error.message, error.data, args.pretty)
    _print_json(response.result, args.pretty)
    return EXIT_OK


async def _methods(args: argparse.Namespace) -> int:
    from .errors import RemoteValueError

    connected = False
    try:
        async with _client(args) as client:
            connected = True
            response = await client.call("rpc.discover", timeout=args.timeout)
    except RemoteValueError as exc:
        return _fail(EXIT_REMOTE_ERROR, f"the server does not answer rpc.discover ({exc})")
    except Exception as exc:
        return _fail(*describe_failure(exc, args.url, connected, args.timeout))
    if getattr(response, "error", None) is not None:
        return _fail(EXIT_REMOTE_ERROR, f"the server does not answer rpc.discover ({response.error.message})")
    doc = response.result
    if args.json:
        _print_json(doc, args.pretty)
        return EXIT_OK
    if not isinstance(doc, dict) or not isinstance(doc.get("methods"), list):
        return _fail(EXIT_REMOTE_ERROR, "the server's rpc.discover answer is not an OpenRPC document (try --json)")
    for line in format_methods(doc):
        print(line)
    return EXIT_OK


_SCALARS = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "None"}


def schema_type(schema: Any) -> str:
    """A JSON Schema as a short Python-like type: ``list[Item]``, ``float | None``, ``any``."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " | ".join(dict.fromkeys(schema_type(s) for s in schema[key]))
    if "enum" in schema and isinstance(schema["enum"], list):
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(schema_type({**schema, "type": k}) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"list[{schema_type(items)}]" if items else "list"
    if kind == "object":
        if schema.get("title"):
            return str(schema["title"])
        extra = schema.get("additionalProperties")
        return f"dict[str, {schema_type(extra)}]" if isinstance(extra, dict) and extra else "dict"
    if isinstance(kind, str):
        return _SCALARS.get(kind, kind)
    return str(schema.get("title") or "any")


_ROLE = re.compile(r":[\w:.-]+:`(~?)([^`<]*?)\s*(?:<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`__?")
_LITERAL = re.compile(r"``(.+?)``")
_INTERPRETED = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])")


def plain_text(text: str) -> str:
    """reST markup of a docstring's summary as the plain text a terminal should show."""

    def role(match: re.Match[str]) -> str:
        tilde, target = match.group(1), match.group(2)
        return target.rsplit(".", 1)[-1] if tilde else target  # ~a.b.C shows as C, as Sphinx does

    text = _ROLE.sub(role, text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    if text.endswith("::"):
        text = text[:-1]
    return " ".join(text.split())


def format_methods(doc: Dict[str, Any]) -> List[str]:
    """One signature line per method, its summary indented below it."""
    lines: List[str] = []
    for method in doc.get("methods", []):
        if not isinstance(method, dict) or "name" not in method:
            continue
        params = []
        for param in method.get("params", []):
            optional = "" if param.get("required") else "?"
            params.append(f"{param.get('name', '')}{optional}: {schema_type(param.get('schema'))}")
        result = method.get("result")
        returns = f" -> {schema_type(result.get('schema'))}" if isinstance(result, dict) else ""
        lines.append(f"{method['name']}({', '.join(params)}){returns}")
        summary = plain_text(str(method.get("summary") or ""))
        if summary:
            lines.append(f"    {summary}")
    return lines


def _load(target: str) -> Any:
    from .methods import RpcMethodsBase

    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"expected module:Class, got {target!r}")
    obj = getattr(importlib.import_module(module_name), attr)
    if isinstance(obj, RpcMethodsBase):
        return obj
    if isinstance(obj, type) and issubclass(obj, RpcMethodsBase):
        return obj()
    raise ValueError(f"{target} is neither an RpcMethodsBase subclass nor an instance of one")


def _serve(args: argparse.Namespace) -> int:
    sys.path.insert(0, ".")
    try:
        methods = _load(args.target)
    except (ImportError, AttributeError, ValueError) as exc:
        return _fail(EXIT_USAGE, f"cannot serve {args.target}: {exc}")
    print(f"serving {args.target} on ws://{args.host}:{args.port}{args.path}", flush=True)
    if args.asgi:
        import uvicorn
        from fastapi import FastAPI

        from .endpoint import WebSocketRpcEndpoint

        app = FastAPI()
        WebSocketRpcEndpoint(methods).register_route(app, args.path)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return EXIT_OK
    import logging

    from .server import run

    level = logging.DEBUG if args.log_level == "trace" else getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s: %(name)s: %(message)s")
    run(methods, args.host, args.port, path=args.path)
    return EXIT_OK


# --------------------------------------------------------------------- parser
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default where it has a meaningful one (not for flags or None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and action.option_strings
            and default not in (None, False, argparse.SUPPRESS)
            and default != []
        ):
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from . import IMPLEMENTATION, __version__

    python = ".".join(map(str, sys.version_info[:3]))
    return f"fastwsrpc {__version__} ({IMPLEMENTATION} implementation, Python {python})"


class _VersionAction(argparse.Action):
    """``--version``, imported lazily: the active twin is only known once fastwsrpc loads."""

    def __init__(self, option_strings: List[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(_version())
        parser.exit()


def _connection_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("url", help="ws:// or wss:// address of the endpoint, for example ws://127.0.0.1:9000/ws")
    sub.add_argument(
        "--header",
        "-H",
        dest="headers",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header for the handshake, such as 'Authorization: Bearer TOKEN'; repeatable",
    )
    sub.add_argument(
        "--timeout", type=float, default=DEFAULT_CALL_TIMEOUT, metavar="SECONDS", help="seconds to wait for the answer"
    )
    sub.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="seconds to wait for the connection and the WebSocket handshake; a failed connect is not retried",
    )
    sub.add_argument("--pretty", action="store_true", help="indent the JSON output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastwsrpc",
        description="JSON-RPC 2.0 over WebSocket from the command line.",
        epilog="Exit codes: 0 success, 1 JSON-RPC error answered, 2 bad usage, 3 connection failure or timeout.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version", "-V", action=_VersionAction, help="print the version and the active implementation"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    call = sub.add_parser(
        "call",
        help="call a method and print its result as JSON",
        description="Call a method and print its result as JSON (a JSON-RPC error goes to stderr, exit 1).",
        formatter_class=_HelpFormatter,
    )
    _connection_options(call)
    call.set_defaults(command_parser=call)
    call.add_argument("method", help="the method's name")
    call.add_argument(
        "params",
        nargs="*",
        help="key=value (named) or values (positional); each value is read as JSON if it parses, else as a string",
    )
    call.add_argument(
        "--params",
        dest="params_json",
        metavar="JSON",
        help="params as one JSON object (named) or array (positional); '-' reads it from standard input",
    )
    call.add_argument("--notify", action="store_true", help="send a notification (never answered) instead of a call")

    methods = sub.add_parser(
        "methods",
        help="list the server's methods (rpc.discover)",
        description="List the server's methods with their parameters, types and summaries (from rpc.discover).",
        formatter_class=_HelpFormatter,
    )
    _connection_options(methods)
    methods.set_defaults(command_parser=methods)
    methods.add_argument("--json", action="store_true", help="print the whole OpenRPC document as JSON instead")

    serve = sub.add_parser(
        "serve",
        help="serve an RpcMethodsBase subclass (native server; --asgi: FastAPI on uvicorn)",
        description=(
            "Serve the public async methods of an RpcMethodsBase subclass over WebSocket, on the native "
            "server (fastwsrpc.server, uvloop when installed), or with --asgi on a FastAPI app under uvicorn."
        ),
        formatter_class=_HelpFormatter,
    )
    serve.add_argument("target", help="module:Class or module:instance, importable from the current directory")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=9000, help="TCP port to listen on")
    serve.add_argument("--path", default="/ws", help="URL path of the WebSocket endpoint")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="log level (uvicorn's, with --asgi)",
    )
    serve.add_argument(
        "--asgi",
        action="store_true",
        help="serve a FastAPI app with uvicorn instead of the native server",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code (argparse exits 2 itself on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    subparser: argparse.ArgumentParser = args.command_parser
    try:  # everything the server cannot change is checked before connecting
        check_url(args.url)
        args.header_pairs = parse_headers(args.headers)
        if args.command == "call":
            args.params_value = parse_params(args.params, args.params_json)
    except UsageError as exc:
        subparser.error(str(exc))  # prints usage and exits 2
    runner = _call if args.command == "call" else _methods
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
