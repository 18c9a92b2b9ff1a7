"""A server for the flood tests, run in a process of its own so its RSS can be read.

``python -m tests.flood_app --fd N`` serves on an already-bound listening
socket inherited from the test (no port is closed and bound again). A second
connection asks ``stats`` for what the server holds while the first floods it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
from typing import Any, Dict, Optional, Set

import uvicorn
from fastapi import FastAPI

from fastwsrpc import RpcChannel, RpcMethodsBase, WebSocketRpcEndpoint

CHANNELS: Set[RpcChannel] = set()
_GATE: Optional[asyncio.Event] = None
NOTED = [0]


def gate() -> asyncio.Event:
    """The Event that holds ``held``, made in the server's loop (on Python 3.9 an
    Event binds to the loop current when it is made, not the one that awaits it)."""
    global _GATE
    if _GATE is None:
        _GATE = asyncio.Event()
    return _GATE


class FloodMethods(RpcMethodsBase):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def pad(self, i: int, size: int = 512) -> str:
        """An answer bigger than the call, so a client that never reads fills the pipe quickly.

        (Without compression: it deflates to a few bytes.)
        """
        return "x" * size

    async def held(self, i: int = 0) -> int:
        await gate().wait()
        NOTED[0] += 1
        return i

    async def release(self) -> int:
        gate().set()
        return NOTED[0]

    async def stats(self) -> Dict[str, Any]:
        gc.collect()
        with open("/proc/self/status") as status:
            rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        others = [ch for ch in CHANNELS if ch is not self.channel and not ch.is_closed()]
        return {
            "rss": rss,
            "tasks": len(asyncio.all_tasks()),
            "paused": sum(ch.reading_paused for ch in others),
            "running": sum(ch.running_count for ch in others),
            "sending": sum(ch.sending_count for ch in others),
            "refused": sum(ch.refused_calls for ch in others),
            "dropped": sum(ch.dropped_notifications for ch in others),
            "noted": NOTED[0],
            "open": len(others),
            "chtasks": sum(len(ch._runner.tasks) for ch in others),
            "deferred": sum(len(ch._budget.deferred) for ch in others),
            "queued": sum(ch.queued_count for ch in others),
            "pending": sum(len(ch._calls.pending) for ch in others),
        }


async def _track(channel: RpcChannel) -> None:
    CHANNELS.add(channel)


async def _untrack(channel: RpcChannel) -> None:
    CHANNELS.discard(channel)


def make_app() -> FastAPI:
    app = FastAPI()
    WebSocketRpcEndpoint(FloodMethods(), on_connect=[_track], on_disconnect=[_untrack]).register_route(app, "/ws")
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    # The sans-I/O protocol (uvicorn's default on Python 3.10+, not on the releases
    # that run on 3.9): the legacy one queues at most ws_max_queue (32) messages
    # itself, so the channel's own budget never fills and "paused" is never seen.
    config = uvicorn.Config(
        make_app(), log_level="warning", lifespan="off", ws_max_size=16 * 1024 * 1024, ws="websockets-sansio"
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
