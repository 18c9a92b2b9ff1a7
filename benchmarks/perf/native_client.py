"""The client of ``measure.py``'s native-server figures: a plain ``websockets`` client.

    python benchmarks/perf/native_client.py PORT KIND N

Raw frames, built before the clock starts and the same for every tree, so the
server under measurement sees the same bytes whichever version it runs:

* ``notes``: N notifications of ``note``, then one call of ``notes`` (it comes
  after them, so its answer says all N were handled);
* ``calls``: N calls of ``add``, 64 in flight (as compare.py's raw driver);
* ``idle``: N idle connections (offering ``jsonrpc2.0``, as compare.py), the
  server's ``mem`` asked before and after; prints bytes per connection.

Each kind ends with ``stop``, which ends the server's process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Dict

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

WARMUP = 200


def frame(method: str, params: Any = None, id: Any = None) -> str:
    msg: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if id is not None:
        msg["id"] = id
    return json.dumps(msg, separators=(",", ":"))


async def call(ws: Any, method: str) -> Any:
    await ws.send(frame(method, id="ctl"))
    return json.loads(await ws.recv())["result"]


async def notes(ws: Any, n: int) -> None:
    note = frame("note", {"i": 1})
    for _ in range(WARMUP + n):
        await ws.send(note)
    got = await call(ws, "notes")
    assert got == WARMUP + n, got


async def calls(ws: Any, n: int, window: int = 64) -> None:
    total = WARMUP + n
    frames = [frame("add", {"a": i, "b": 1}, i) for i in range(total)]
    sent = 0
    for _ in range(min(window, total)):
        await ws.send(frames[sent])
        sent += 1
    for _ in range(total):
        await ws.recv()
        if sent < total:
            await ws.send(frames[sent])
            sent += 1


async def idle(url: str, ws: Any, n: int) -> None:
    await asyncio.sleep(0.5)
    before = await call(ws, "mem")
    conns = [await connect(url, compression=None, subprotocols=[Subprotocol("jsonrpc2.0")]) for _ in range(n)]
    await asyncio.sleep(1.0)
    after = await call(ws, "mem")
    print(json.dumps({k: (after[k] - before[k]) / max(n, 1) for k in before}))
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def main(port: int, kind: str, n: int) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    async with connect(url, max_size=None, compression=None, open_timeout=120, ping_interval=None) as ws:
        if kind == "notes":
            await notes(ws, n)
        elif kind == "calls":
            await calls(ws, n)
        elif kind == "idle":
            await idle(url, ws, n)
        else:
            raise SystemExit(f"unknown kind {kind}")
        await ws.send(frame("stop", id="stop"))
        await ws.recv()


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
