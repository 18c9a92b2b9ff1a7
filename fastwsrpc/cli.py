"""The ``fastwsrpc`` command: call a server, list its methods, subscribe, serve a methods class.

    fastwsrpc call ws://127.0.0.1:9000/ws add a=1 b=2     # named params (values are JSON, else strings)
    fastwsrpc call ws://127.0.0.1:9000/ws subtract 42 23  # positional params
    fastwsrpc call URL add --params '{"a": 1, "b": 2}'    # params as one JSON object or array
    echo '[42, 23]' | fastwsrpc call URL subtract --params -
    fastwsrpc call URL whoami --header 'Authorization: Bearer TOKEN'
    fastwsrpc call URL ticks n=3                          # a stream method: one JSON line per item
    fastwsrpc subscribe URL prices.btc prices.eth         # one JSON line per event, until Ctrl-C
    fastwsrpc methods ws://127.0.0.1:9000/ws              # via rpc.discover
    fastwsrpc serve mypackage.module:MyMethods --port 9000
    fastwsrpc serve app:Methods --workers 4 --broker redis://127.0.0.1:6379/0
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
import inspect
import json
import os
import re
import signal
import socket
import ssl
import sys
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .gctune import GC_THRESHOLD, tune_gc

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


# --------------------------------------------------------------------- streams
def _answer_or_stream(client: Any, method: str, params: Any, timeout: Optional[float]) -> Any:
    """A call whose answer decides what it is: a plain result, or a stream to read to its end.

    Built on :class:`~fastwsrpc.streams.RpcStream` (registered as a consumer before
    the request goes out, so that items sent right behind the answer find it).
    Decided from the answer, not from ``rpc.discover``: discovery may be off, and
    the stream protocol itself says what a stream's answer is, ``{"stream": <the
    request's id>}``, which no plain method can give by accident.
    """
    from .protocol import Response
    from .streams import RpcStream

    class AnswerOrStream(RpcStream):
        #: The answer when it is not a stream (``None`` once a stream opened).
        answer: Optional[Response] = None

        async def open(self) -> None:
            if not self._opened:
                self.answer = await self.open_or_answer(timeout)

    channel = client.channel
    if channel is None:  # pragma: no cover - the client is connected when this is called
        raise RuntimeError("not connected")
    return AnswerOrStream(channel._streams, method, params)


async def _print_items(stream: Any, args: argparse.Namespace) -> int:
    """Print each item of an open stream as one JSON line (flushed) until it ends."""
    from .errors import RemoteValueError

    args.streaming = True  # from now on Ctrl-C is the user's way to stop: exit 0
    count = getattr(args, "count", None)
    printed = 0
    try:
        while count is None or printed < count:
            try:
                item = await stream.next()
            except StopAsyncIteration:
                break
            _print_json(item, args.pretty)
            sys.stdout.flush()
            printed += 1
    except RemoteValueError as exc:  # the producer failed: what it sent is printed, its error follows
        return _print_remote_error(exc.code, exc.message, exc.data, args.pretty)
    except BrokenPipeError:  # the reader went away (``| head -3``): stop quietly
        _silence_stdout()
    return EXIT_OK


def _silence_stdout() -> None:
    """After a broken pipe: later flushes (at exit, too) must not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout is not a real file
        pass


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
            async with _answer_or_stream(client, args.method, args.params_value, args.timeout) as request:
                response = request.answer
                if response is None:
                    return await _print_items(request, args)
    except RemoteValueError as exc:
        return _print_remote_error(exc.code, exc.message, exc.data, args.pretty)
    except Exception as exc:
        return _fail(*describe_failure(exc, args.url, connected, args.timeout))
    error = getattr(response, "error", None)
    if error is not None:  # a remote error answered rather than raised
        return _print_remote_error(error.code, error.message, error.data, args.pretty)
    _print_json(response.result, args.pretty)
    return EXIT_OK


async def _subscribe(args: argparse.Namespace) -> int:
    from .errors import RemoteValueError
    from .topics import SUBSCRIBE

    params: Dict[str, Any] = {"topics": list(args.topics)}
    if args.on_slow is not None:
        params["on_slow"] = args.on_slow
    connected = False
    try:
        async with _client(args) as client:
            connected = True
            async with _answer_or_stream(client, SUBSCRIBE, params, args.timeout) as subscription:
                answer = subscription.answer
                if answer is None:
                    return await _print_items(subscription, args)
    except RemoteValueError as exc:
        return _print_remote_error(exc.code, exc.message, exc.data, args.pretty)
    except Exception as exc:
        return _fail(*describe_failure(exc, args.url, connected, args.timeout))
    if getattr(answer, "error", None) is not None:
        return _print_remote_error(answer.error.code, answer.error.message, answer.error.data, args.pretty)
    return _fail(EXIT_REMOTE_ERROR, f"the server does not serve subscriptions ({SUBSCRIBE} answered {answer.result!r})")


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
    """The ``module:Class`` (or ``module:instance``) to serve, imported and checked; not built yet."""
    from .methods import RpcMethodsBase

    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"expected module:Class, got {target!r}")
    obj = getattr(importlib.import_module(module_name), attr)
    if isinstance(obj, RpcMethodsBase) or (isinstance(obj, type) and issubclass(obj, RpcMethodsBase)):
        return obj
    raise ValueError(f"{target} is neither an RpcMethodsBase subclass nor an instance of one")


def _build_methods(target: Any, cluster: Any) -> Any:
    """An instance as it is; a class built with no argument, or ``cluster=`` when its constructor takes one.

    That is how served methods reach clients on other workers: ``await
    self.cluster.call(client_id, ...)`` goes through the node's cluster (the broker's).
    """
    if not isinstance(target, type):
        return target
    try:
        takes_cluster = "cluster" in inspect.signature(target).parameters
    except (TypeError, ValueError):  # pragma: no cover - a constructor without a signature
        takes_cluster = False
    return target(cluster=cluster) if takes_cluster else target()


#: A worker that dies is restarted, but not more than this many times ...
MAX_RESTARTS = 5
#: ... within this many seconds (all workers together); then the server gives up.
RESTART_WINDOW = 60.0
#: After the drain (or at once on Ctrl-C), how long workers get to exit before they are killed.
STOP_GRACE = 15.0


def _redact(url: str) -> str:
    """A broker URL fit to print: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _check_serve(args: argparse.Namespace) -> Optional[str]:
    """What makes this ``serve`` command line unworkable (exit 2 before anything starts), else ``None``."""
    if args.worker is not None and args.supervisor_fd is None:
        return "--worker is for the workers a supervisor starts (use --workers N)"
    if args.workers < 1:
        return f"--workers must be at least 1, got {args.workers}"
    if args.drain_timeout < 0:
        return f"--drain-timeout must be 0 or more seconds, got {args.drain_timeout:g}"
    if args.broker is not None:
        from .cluster import broker_from_url

        try:
            broker_from_url(args.broker)  # the scheme, and the extra it needs (redis, nats-py)
        except (ValueError, ImportError) as exc:
            return f"--broker {_redact(args.broker)}: {exc}"
    if args.workers == 1:
        return None
    if args.broker is None or urlsplit(args.broker).scheme.lower() == "memory":
        return (
            f"--workers {args.workers} needs --broker redis://... or nats://...: each worker holds its own "
            "connections, and without a shared broker a call to a client held by another worker could not "
            "be routed (nor a topic published on one worker reach subscribers on the others)"
        )
    if not hasattr(socket, "SO_REUSEPORT"):
        return (
            f"--workers {args.workers} needs SO_REUSEPORT (several processes listening on one port), which "
            "this platform does not have: run one process per port behind a load balancer instead"
        )
    if args.port == 0:
        return "--workers needs a fixed --port: every worker listens on the same one"
    return None


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on ``host:port``; with ``reuse_port``, one of several on the port (SO_REUSEPORT)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _port_in_use(host: str, port: int) -> Optional[str]:
    """Why ``host:port`` cannot be listened on (bound without SO_REUSEPORT: anyone on it counts), or ``None``."""
    try:
        _bind(host, port, reuse_port=False).close()
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    sys.path.insert(0, ".")
    try:
        target = _load(args.target)
    except (ImportError, AttributeError, ValueError) as exc:
        return _fail(EXIT_USAGE, f"cannot serve {args.target}: {exc}")
    problem = _check_serve(args)
    if problem is not None:
        return _fail(EXIT_USAGE, problem)
    if args.worker is not None:  # one of the workers a supervisor started (see _supervise)
        return _run_node(args, target, worker=True)
    where = f"serving {args.target} on ws://{args.host}:{args.port}{args.path}"
    if args.workers > 1:
        problem = _port_in_use(args.host, args.port)
        if problem is not None:
            return _fail(EXIT_USAGE, problem)
        print(f"{where} with {args.workers} workers, cluster broker {_redact(args.broker)}", flush=True)
        return _supervise(args, argv)
    print(where + (f", cluster broker {_redact(args.broker)}" if args.broker else ""), flush=True)
    return _run_node(args, target, worker=False)


# --------------------------------------------------------------------- one server process
def _run_node(args: argparse.Namespace, target: Any, worker: bool) -> int:
    """Serve in this process until Ctrl-C, or SIGTERM and a drain; as a worker, on a SO_REUSEPORT socket."""
    supervisor: Optional[socket.socket] = None
    sock: Optional[socket.socket] = None
    if worker:
        supervisor = socket.socket(fileno=args.supervisor_fd)
        try:
            sock = _bind(args.host, args.port, reuse_port=True)
        except OSError as exc:
            return _fail(EXIT_USAGE, f"worker {args.worker}: cannot listen on {args.host}:{args.port}: {exc}")
        _watch_supervisor(supervisor)
    tune_gc(args.gc_threshold)  # this process holds the connections: see fastwsrpc/gctune.py
    if args.asgi:
        return _run_uvicorn(args, target, sock, supervisor)
    import logging

    level = logging.DEBUG if args.log_level == "trace" else getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s: %(name)s: %(message)s")

    async def main() -> None:
        from .cluster import Cluster, broker_from_url
        from .server import WebSocketRpcServer, drain_on_sigterm

        cluster = Cluster(broker_from_url(args.broker) if args.broker else None)
        try:
            server = WebSocketRpcServer(_build_methods(target, cluster), cluster=cluster)
            where: Dict[str, Any] = {"sock": sock} if sock is not None else {"host": args.host, "port": args.port}
            async with server.listen(path=args.path, **where):
                drain_on_sigterm(server, args.drain_timeout)  # a rolling restart drops no call
                if supervisor is not None:
                    supervisor.sendall(b"ready\n")
                assert server._stop is not None
                await server._stop.wait()  # until close(): after the drain, on SIGTERM (as server.run does)
        finally:
            await cluster.close()  # this node's clients leave the cluster now, not at their TTL

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/POSIX
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main())
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _watch_supervisor(supervisor: socket.socket) -> None:
    """A worker whose supervisor is gone (killed, even with SIGKILL) drains and exits, as on SIGTERM."""
    import threading

    def watch() -> None:
        try:
            while supervisor.recv(64):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="fastwsrpc-supervisor-watch", daemon=True).start()


def _run_uvicorn(
    args: argparse.Namespace, target: Any, sock: Optional[socket.socket], supervisor: Optional[socket.socket]
) -> int:
    """``--asgi``: a FastAPI app with the endpoint at ``--path`` and ``/healthz``, under uvicorn; SIGTERM drains."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from .cluster import Cluster, broker_from_url
    from .endpoint import WebSocketRpcEndpoint

    cluster = Cluster(broker_from_url(args.broker) if args.broker else None)
    endpoint = WebSocketRpcEndpoint(_build_methods(target, cluster), cluster=cluster)
    app = FastAPI()
    endpoint.register_route(app, args.path)
    if args.path != HEALTH_PATH:

        async def health() -> PlainTextResponse:
            """200 "ok", or 503 "draining" once SIGTERM began the drain (for load balancers)."""
            if endpoint.draining:
                return PlainTextResponse("draining\n", status_code=503)
            return PlainTextResponse("ok\n")

        app.add_api_route(HEALTH_PATH, health, methods=["GET"], include_in_schema=False)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
    server = _draining_uvicorn_class()(config, endpoint, args.drain_timeout)
    if supervisor is not None:
        supervisor.sendall(b"ready\n")
    server.run(sockets=[sock] if sock is not None else None)
    return EXIT_OK


#: Where ``serve`` answers health checks (the native server's ``health_path``; added to the ``--asgi`` app).
HEALTH_PATH = "/healthz"


def _draining_uvicorn_class() -> Any:
    import uvicorn

    class DrainingUvicorn(uvicorn.Server):
        """uvicorn that drains the endpoint on SIGTERM before its own shutdown (Ctrl-C stops at once).

        While the drain runs, uvicorn still listens: new upgrades get HTTP 503 and
        ``/healthz`` says 503, so a load balancer moves on; then each connection is
        closed with 1012, spread over the drain window, and uvicorn shuts down.
        """

        def __init__(self, config: Any, endpoint: Any, drain_timeout: float) -> None:
            super().__init__(config)
            self.endpoint = endpoint
            self.drain_timeout = drain_timeout
            self.drain_requested = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn's own rule, without re-raising the signal once stopped (exit 0 after a drain).
            if sig == signal.SIGTERM and not self.should_exit:
                self.drain_requested = True
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

        async def shutdown(self, sockets: Any = None) -> None:
            if self.drain_requested:
                import logging

                logging.getLogger("uvicorn.error").warning(
                    "SIGTERM: draining for up to %.3g s, then stopping", self.drain_timeout
                )
                drain = asyncio.ensure_future(self.endpoint.drain(self.drain_timeout))
                while not drain.done() and not self.force_exit:  # a Ctrl-C during the drain ends it
                    await asyncio.wait({drain}, timeout=0.1)
                if not drain.done():
                    drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)
            await super().shutdown(sockets=sockets)
            await self.endpoint.cluster.close()  # this node's clients leave the cluster now, not at their TTL

    return DrainingUvicorn


# --------------------------------------------------------------------- several workers
class _Worker:
    """One worker process and the supervisor's end of its socket pair (``ready``, then EOF when it dies)."""

    def __init__(self, index: int, proc: Any, link: socket.socket) -> None:
        self.index = index
        self.proc = proc
        self.link = link
        self.ready = False


def _supervise(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Start ``--workers`` processes on one port, restart those that die (bounded), pass SIGTERM on as a drain."""
    import collections
    import selectors
    import subprocess
    import time

    def say(message: str) -> None:
        print(f"fastwsrpc: {message}", file=sys.stderr, flush=True)

    def start(index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "fastwsrpc",
            *argv,
            "--worker",
            str(index),
            "--supervisor-fd",
            str(theirs.fileno()),
        ]
        try:
            # A session of its own: a Ctrl-C at the terminal reaches the supervisor only, which passes it on.
            proc = subprocess.Popen(command, pass_fds=(theirs.fileno(),), start_new_session=True)
        finally:
            theirs.close()
        worker = _Worker(index, proc, ours)
        selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    def send(worker: _Worker, sig: int) -> None:
        if worker.proc.poll() is None:
            try:
                worker.proc.send_signal(sig)
            except ProcessLookupError:  # pragma: no cover - it exited a moment ago
                pass

    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ, None)
    asked: List[int] = []

    def on_signal(sig: int, frame: Any) -> None:
        asked.append(sig)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
    workers: Dict[int, _Worker] = {}
    restarts: Deque[float] = collections.deque()
    stopping: Optional[int] = None  # the signal passed on to the workers, once stopping
    deadline = 0.0
    code = EXIT_OK
    try:
        for index in range(1, args.workers + 1):
            workers[index] = start(index)
        while workers:
            now = time.monotonic()
            for sig in asked:
                if stopping is None:
                    # SIGTERM (or giving up): each worker drains; Ctrl-C: each stops at once.
                    stopping = signal.SIGINT if sig == signal.SIGINT else signal.SIGTERM
                    grace = args.drain_timeout + STOP_GRACE if stopping == signal.SIGTERM else STOP_GRACE
                    deadline = now + grace
                    if sig in (signal.SIGTERM, signal.SIGINT):
                        what = "draining" if stopping == signal.SIGTERM else "stopping"
                        say(f"{signal.Signals(sig).name}: {what} {len(workers)} workers")
                    for worker in workers.values():
                        send(worker, stopping)
                elif sig == signal.SIGINT:  # a second Ctrl-C: no more waiting
                    say("stopping now")
                    deadline = now
            asked.clear()
            if stopping is not None and now >= deadline:
                for worker in workers.values():
                    if worker.proc.poll() is None:
                        say(f"worker {worker.index} (pid {worker.proc.pid}) did not stop in time; killing it")
                        send(worker, signal.SIGKILL)
                deadline = float("inf")
            timeout = 1.0 if stopping is None else max(0.0, min(1.0, deadline - now))
            for key, _ in selector.select(timeout):
                if key.data is None:  # a signal arrived: it is in ``asked``
                    try:
                        while wake_r.recv(512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                worker = key.data
                try:
                    said = worker.link.recv(64)
                except OSError:
                    said = b""
                if said and not worker.ready:
                    worker.ready = True
                    say(f"worker {worker.index} (pid {worker.proc.pid}) listening")
                elif not said:
                    selector.unregister(worker.link)  # EOF: it is gone, or going
            for index, worker in list(workers.items()):
                if worker.proc.poll() is None:
                    continue
                try:
                    selector.unregister(worker.link)
                except KeyError:
                    pass
                worker.link.close()
                del workers[index]
                if stopping is not None or code != EXIT_OK:
                    continue
                status = worker.proc.returncode
                how = f"was killed by {_signal_name(-status)}" if status < 0 else f"exited with code {status}"
                now = time.monotonic()
                while restarts and restarts[0] <= now - RESTART_WINDOW:
                    restarts.popleft()
                if len(restarts) >= MAX_RESTARTS:
                    say(
                        f"worker {index} (pid {worker.proc.pid}) {how}; {MAX_RESTARTS} restarts within "
                        f"{RESTART_WINDOW:g} s already: giving up (draining the other workers)"
                    )
                    code = EXIT_REMOTE_ERROR
                    asked.append(_GIVE_UP)
                    continue
                restarts.append(now)
                say(f"worker {index} (pid {worker.proc.pid}) {how}; restarting it")
                workers[index] = start(index)
    finally:
        for worker in workers.values():
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        selector.close()
        wake_r.close()
        wake_w.close()
    if code == EXIT_OK:
        say("all workers stopped")
    return code


#: Not a signal: what the supervisor tells itself when it gives up (the workers drain, as on SIGTERM).
_GIVE_UP = -1


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


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
        help="call a method and print its result as JSON (a stream: one JSON line per item)",
        description=(
            "Call a method and print its result as JSON (a JSON-RPC error goes to stderr, exit 1).\n\n"
            "A stream method (an async generator on the server) is read to its end, one JSON line per\n"
            "item, flushed as each arrives; Ctrl-C stops it (exit 0). What a method is, is decided from\n"
            'its answer, not from rpc.discover: a stream answers {"stream": <the request\'s id>}, which\n'
            "works with discovery off and with any server that speaks the stream protocol. --timeout\n"
            "bounds the answer; a stream's items are awaited as long as it lasts. A stream that ends\n"
            "with an error prints the items it sent, then the error on stderr (exit 1)."
        ),
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

    subscribe = sub.add_parser(
        "subscribe",
        help="print the events published on topics, one JSON line each, until Ctrl-C",
        description=(
            "Subscribe to topics and print each event as one JSON line, as the server sends it\n"
            '({"topic": ..., "data": ..., "dropped": n}, plus "epoch" and "offset" when the server keeps\n'
            "topic history), until Ctrl-C (exit 0), --count events, or the connection's end (exit 3;\n"
            "a server that drains closes with 1012: subscribe again, to another server)."
        ),
        formatter_class=_HelpFormatter,
    )
    _connection_options(subscribe)
    subscribe.set_defaults(command_parser=subscribe)
    subscribe.add_argument("topics", nargs="+", metavar="topic", help="a topic to subscribe to; several may be given")
    subscribe.add_argument(
        "--on-slow",
        choices=["disconnect", "drop_oldest", "drop_new"],
        help="what the server does when we cannot keep up (default: the server's policy)",
    )
    subscribe.add_argument("--count", type=int, metavar="N", help="exit 0 after N events")

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
            "Serve the public methods of an RpcMethodsBase subclass over WebSocket, on the native server\n"
            "(fastwsrpc.server, uvloop when installed), or with --asgi on a FastAPI app under uvicorn.\n"
            "A class whose constructor takes a `cluster` argument is given the node's cluster, to call\n"
            "clients on any worker: await self.cluster.call(client_id, method, params).\n\n"
            "SIGTERM drains: new connections get HTTP 503 (so does GET /healthz), calls in flight finish,\n"
            "then each connection is closed with 1012 (service restart), spread over --drain-timeout.\n"
            "Ctrl-C stops at once (connections closed with 1001).\n\n"
            "--workers N starts N processes listening on the one port (SO_REUSEPORT), each a node of the\n"
            "cluster on --broker; a worker that dies is restarted (at most 5 restarts a minute, then the\n"
            "server gives up and exits 1); SIGTERM drains every worker. Exit: 0 stopped, 1 gave up, 2 bad usage."
        ),
        formatter_class=_HelpFormatter,
    )
    serve.add_argument("target", help="module:Class or module:instance, importable from the current directory")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=9000, help="TCP port to listen on")
    serve.add_argument("--path", default="/ws", help="URL path of the WebSocket endpoint ({client_id} names a client)")
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
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, the window over which connections are closed with 1012 and calls in flight may finish",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (SO_REUSEPORT); more than 1 needs --broker; one per core",
    )
    serve.add_argument(
        "--broker",
        metavar="URL",
        help="cluster broker shared by the workers and other servers: redis://host:6379/0 or nats://host:4222",
    )
    serve.add_argument(
        "--gc-threshold",
        type=int,
        default=GC_THRESHOLD,
        metavar="N",
        help=(
            "collect Python's youngest GC generation every N allocations (Python's default: 700), so that "
            "a process holding many connections is not stalled by frequent full collections; 0: leave Python's"
        ),
    )
    # What a supervisor passes to the workers it starts; not for people.
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit code (argparse exits 2 itself on bad usage)."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    if args.command == "serve":
        return _serve(args, arguments)
    subparser: argparse.ArgumentParser = args.command_parser
    try:  # everything the server cannot change is checked before connecting
        check_url(args.url)
        args.header_pairs = parse_headers(args.headers)
        if args.command == "call":
            args.params_value = parse_params(args.params, args.params_json)
        if args.command == "subscribe" and args.count is not None and args.count < 1:
            raise UsageError(f"--count must be at least 1, got {args.count}")
    except UsageError as exc:
        subparser.error(str(exc))  # prints usage and exits 2
    runner = {"call": _call, "subscribe": _subscribe, "methods": _methods}[args.command]
    args.streaming = args.command == "subscribe"
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        # Ctrl-C is how a subscription or a stream ends: a success; anywhere else, an interruption.
        return EXIT_OK if args.streaming else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
