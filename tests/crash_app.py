"""A server as a new user writes it, with no logging configured: ``python -m tests.crash_app native|fastapi PORT``."""

from __future__ import annotations

import sys

from fastwsrpc import RpcMethodsBase


class Crashing(RpcMethodsBase):
    async def divide(self, a: int, b: int) -> float:
        return a / b


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "native":
        import fastwsrpc

        fastwsrpc.run(Crashing(), port=port)
    else:
        import uvicorn
        from fastapi import FastAPI

        from fastwsrpc import WebSocketRpcEndpoint

        app = FastAPI()
        WebSocketRpcEndpoint(Crashing()).register_route(app, "/ws")
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
