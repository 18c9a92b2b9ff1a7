"""A server that calls its clients back: on connect, and from inside a call.

Run: python examples/bidirectional_server.py --port 9000
"""

import argparse
from typing import List, Optional

import uvicorn
from fastapi import FastAPI

from fastwsrpc import RpcChannel, RpcMethodsBase, WebSocketRpcEndpoint


class Calculator(RpcMethodsBase):
    async def add(self, a: float, b: float) -> float:
        return a + b

    async def sum_all(self, *numbers: float) -> float:
        """Positional params work too: {"params": [1, 2, 3]}."""
        return sum(numbers)

    async def ask_client_name(self) -> str:
        """Calls the caller back while its own call is still open (no deadlock)."""
        response = await self.channel.other.whoami()
        return f"you are {response.result}"


async def on_connect(channel: RpcChannel) -> None:
    # Server to client, as soon as the client is there; the event is fire-and-forget.
    await channel.notify("event", {"text": "welcome"})
    response = await channel.other.add_tags(tags=["server", "calls", "client"])
    print(f"[server] client answered add_tags -> {response.result}", flush=True)


app = FastAPI()
WebSocketRpcEndpoint(Calculator(), on_connect=[on_connect]).register_route(app, "/ws")


def main(argv: Optional[List[str]] = None) -> None:  # type: ignore[assignment]
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
