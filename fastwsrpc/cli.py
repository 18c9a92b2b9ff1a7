"""The ``fastwsrpc`` command: call a server, list its methods, serve a methods class.

    fastwsrpc call ws://127.0.0.1:9000/ws add a=1 b=2     # named params (values are JSON, else strings)
    fastwsrpc call ws://127.0.0.1:9000/ws subtract 42 23  # positional params
    fastwsrpc call URL add --params '{"a": 1, "b": 2}'
    fastwsrpc methods ws://127.0.0.1:9000/ws              # via rpc.discover
    fastwsrpc serve mypackage.module:MyMethods --port 9000

Exit codes: 0 success; 1 the server answered with a JSON-RPC error (printed to
stderr as JSON); 2 bad usage; 3 no connection, connection lost, or timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from typing import Any, List, Optional, Sequence

EXIT_OK = 0
EXIT_REMOTE_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: Sequence[str], params_json: Optional[str]) -> Any:
    """``a=1 b=x`` -> {"a": 1, "b": "x"}; ``1 2`` -> [1, 2]; ``--params`` wins."""
    if params_json is not None:
        if items:
            raise ValueError("give params either as arguments or with --params, not both")
        return json.loads(params_json)
    if not items:
        return None
    named = [item.partition("=") for item in items]
    if all(sep for _, sep, _ in named):
        return {key: _value(value) for key, _, value in named}
    if any(sep for _, sep, _ in named):
        raise ValueError("params are either all key=value (named) or all values (positional)")
    return [_value(item) for item in items]


def _print_json(value: Any, pretty: bool, stream: Any = None) -> None:
    from .protocol import encode

    text = encode(value).decode()
    if pretty:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    print(text, file=stream or sys.stdout)


async def _call(args: argparse.Namespace) -> int:
    from . import RemoteValueError, RpcError, RpcMethodsBase, WebSocketRpcClient

    try:
        params = parse_params(args.params, args.params_json)
    except ValueError as exc:
        print(f"fastwsrpc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        async with WebSocketRpcClient(args.url, RpcMethodsBase(), retry_config=False) as client:
            if args.notify:
                await client.notify(args.method, params)
                return EXIT_OK
            response = await client.call(args.method, params, timeout=args.timeout)
    except RemoteValueError as exc:
        _print_json({"code": exc.code, "message": exc.message, "data": exc.data}, args.pretty, sys.stderr)
        return EXIT_REMOTE_ERROR
    except (RpcError, OSError, asyncio.TimeoutError, Exception) as exc:
        print(f"fastwsrpc: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    _print_json(response.result, args.pretty)
    return EXIT_OK


async def _methods(args: argparse.Namespace) -> int:
    from . import RemoteValueError, RpcMethodsBase, WebSocketRpcClient

    try:
        async with WebSocketRpcClient(args.url, RpcMethodsBase(), retry_config=False) as client:
            doc = (await client.call("rpc.discover", timeout=args.timeout)).result
    except RemoteValueError as exc:
        print(f"fastwsrpc: the server does not answer rpc.discover ({exc})", file=sys.stderr)
        return EXIT_REMOTE_ERROR
    except Exception as exc:
        print(f"fastwsrpc: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    if args.json:
        _print_json(doc, args.pretty)
        return EXIT_OK
    for method in doc.get("methods", []):
        params = ", ".join(p["name"] + ("" if p.get("required") else "?") for p in method.get("params", []))
        summary = method.get("summary", "")
        print(f"{method['name']}({params})" + (f"  - {summary}" if summary else ""))
    return EXIT_OK


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
    import uvicorn
    from fastapi import FastAPI

    from .endpoint import WebSocketRpcEndpoint

    sys.path.insert(0, ".")
    try:
        methods = _load(args.target)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"fastwsrpc: cannot serve {args.target}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    app = FastAPI()
    WebSocketRpcEndpoint(methods).register_route(app, args.path)
    print(f"serving {args.target} on ws://{args.host}:{args.port}{args.path}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastwsrpc",
        description="JSON-RPC 2.0 over WebSocket from the command line.",
        epilog="Exit codes: 0 success, 1 JSON-RPC error answered, 2 bad usage, 3 connection failure or timeout.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    call = sub.add_parser("call", help="call a method and print its result as JSON")
    call.add_argument("url", help="ws:// or wss:// address of the endpoint")
    call.add_argument("method")
    call.add_argument(
        "params", nargs="*", help="key=value (named) or values (positional); values are JSON if they parse"
    )
    call.add_argument("--params", dest="params_json", metavar="JSON", help="params as one JSON object or array")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    call.add_argument("--notify", action="store_true", help="send a notification (no answer) instead")
    call.add_argument("--pretty", action="store_true", help="indent the JSON output")

    methods = sub.add_parser("methods", help="list the server's methods (rpc.discover)")
    methods.add_argument("url")
    methods.add_argument("--json", action="store_true", help="print the whole OpenRPC document")
    methods.add_argument("--timeout", type=float, default=30.0)
    methods.add_argument("--pretty", action="store_true")

    serve = sub.add_parser("serve", help="serve an RpcMethodsBase subclass with uvicorn")
    serve.add_argument("target", help="module:Class (or module:instance)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9000)
    serve.add_argument("--path", default="/ws")
    serve.add_argument("--log-level", default="info")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    runner = _call if args.command == "call" else _methods
    return asyncio.run(runner(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
