"""Test seams: two transports joined in memory, and two channels back to back.

Behaviour tests of the channel need no network: ``memory_pair()`` gives two
:class:`~fastwsrpc.transport.Transport` objects whose ``send`` hands frames to
the other's ``receive`` through a bounded queue. A side that stops reading
makes the other side's ``send`` wait once the queue is full, exactly as TCP
pushes back on a real socket, so flow control can be tested in microseconds
and deterministically (h11's ``ConnectionPair`` and httpcore's mock streams
are the model).

::

    async with channel_pair(ServerMethods(), ClientMethods()) as (server, client):
        assert (await client.other.add(a=1, b=2)).result == 3
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Deque, Dict, Optional, Tuple, Union

from .channel import RpcChannel
from .config import RpcSettings
from .methods import RpcMethodsBase
from .transport import CLOSE_NORMAL, TransportClosed

__all__ = ["MemoryTransport", "channel_pair", "memory_pair", "until"]


class _Pipe:
    """One direction of a memory link: a bounded FIFO of frames, then end-of-stream."""

    __slots__ = ("_getter", "_putters", "closed", "items", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.items: Deque[Union[str, bytes]] = deque()
        self.maxsize = maxsize
        self.closed: Optional[TransportClosed] = None
        self._getter: Optional[asyncio.Future[None]] = None
        self._putters: Deque[asyncio.Future[None]] = deque()

    async def put(self, frame: Union[str, bytes]) -> None:
        while len(self.items) >= self.maxsize and self.closed is None:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            await waiter
        if self.closed is not None:
            raise TransportClosed(self.closed.code, self.closed.reason)
        self.items.append(frame)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def put_nowait(self, frame: Union[str, bytes]) -> bool:
        if self.closed is not None or len(self.items) >= self.maxsize or self._putters:
            return False
        self.items.append(frame)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        return True

    async def get(self) -> Union[str, bytes]:
        while not self.items:
            if self.closed is not None:
                raise TransportClosed(self.closed.code, self.closed.reason)
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        frame = self.items.popleft()
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
                break
        return frame

    def close(self, exc: TransportClosed, drop: bool = False) -> None:
        if self.closed is None:
            self.closed = exc
        if drop:
            self.items.clear()
        for waiter in (self._getter, *self._putters):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._putters.clear()


class MemoryTransport:
    """One end of :func:`memory_pair`; a complete :class:`~fastwsrpc.transport.Transport`.

    ``sent`` counts frames this end handed over; ``receiving_partial`` can be
    set by a test to play a peer that started a message and never finished it.
    """

    def __init__(self, inbox: _Pipe, outbox: _Pipe, name: str) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self.name = name
        self.sent = 0
        self.receiving_partial = False
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.aborted = False

    async def send(self, data: Union[bytes, str]) -> None:
        await self._outbox.put(data)
        self.sent += 1

    def send_nowait(self, data: Union[bytes, str]) -> bool:
        """Hand ``data`` over now if the link has room; False (nothing sent) otherwise."""
        if not self._outbox.put_nowait(data):
            return False
        self.sent += 1
        return True

    async def receive(self) -> Union[str, bytes]:
        return await self._inbox.get()

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        closed = TransportClosed(code, reason)
        self._outbox.close(closed)  # the peer reads what was sent, then the close
        self._inbox.close(closed, drop=True)

    def abort(self) -> None:
        self.aborted = True
        if self.close_code is None:
            self.close_code = 1006
        closed = TransportClosed(1006, "aborted")
        self._outbox.close(closed, drop=True)
        self._inbox.close(closed, drop=True)

    @property
    def peer(self) -> str:
        return f"memory:{self.name}"

    def receiving(self) -> bool:
        return self.receiving_partial

    @property
    def queued(self) -> int:
        """Frames sent to this end and not yet received by it (bounded by ``maxsize``)."""
        return len(self._inbox.items)

    @property
    def unread(self) -> int:
        """Frames this end sent that the other end has not received yet (bounded by ``maxsize``)."""
        return len(self._outbox.items)


def memory_pair(maxsize: int = 16) -> Tuple[MemoryTransport, MemoryTransport]:
    """Two transports joined back to back; at most ``maxsize`` frames in flight each way."""
    a_to_b, b_to_a = _Pipe(maxsize), _Pipe(maxsize)
    return MemoryTransport(b_to_a, a_to_b, "a"), MemoryTransport(a_to_b, b_to_a, "b")


@asynccontextmanager
async def channel_pair(
    server_methods: Optional[RpcMethodsBase] = None,
    client_methods: Optional[RpcMethodsBase] = None,
    *,
    settings: Optional[RpcSettings] = None,
    client_settings: Optional[RpcSettings] = None,
    maxsize: int = 16,
    speedups: Any = None,
    **limits: Any,
) -> AsyncIterator[Tuple[RpcChannel, RpcChannel]]:
    """Two channels on a memory pair, both reading; closed (and their readers awaited) on exit.

    ``settings``/``limits`` apply to the server side, and to the client side
    too unless ``client_settings`` is given.
    """
    a, b = memory_pair(maxsize)
    server_settings = RpcSettings.resolve(settings, owner="channel_pair", **limits)
    server = RpcChannel(server_methods, a, settings=server_settings, speedups=speedups)
    client = RpcChannel(client_methods, b, settings=client_settings or server_settings, speedups=speedups)
    readers: Dict[str, asyncio.Task[None]] = {
        "server": asyncio.ensure_future(server.run()),
        "client": asyncio.ensure_future(client.run()),
    }
    try:
        yield server, client
    finally:
        await client.close()
        await server.close()
        for task in readers.values():
            try:
                await task
            except asyncio.CancelledError:
                pass


async def until(predicate: Any, turns: int = 100_000) -> None:
    """Let the loop run until ``predicate()`` holds; fail after ``turns`` iterations.

    Everything on a memory pair happens inside the loop, so yielding turns (no
    clock, no sleep) is enough for any condition that will ever hold.
    """
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition not reached in {turns} loop turns")
