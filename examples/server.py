"""The smallest server: exposes ``concat`` on ws://127.0.0.1:9000/ws."""

import argparse

import uvicorn
from fastapi import FastAPI

from fastwsrpc import RpcMethodsBase, WebSocketRpcEndpoint


class ConcatServer(RpcMethodsBase):
    async def concat(self, a: str = "", b: str = "") -> str:
        return a + b


app = FastAPI()
endpoint = WebSocketRpcEndpoint(ConcatServer())
endpoint.register_route(app, "/ws")

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port)
