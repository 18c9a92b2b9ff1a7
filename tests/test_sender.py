"""The write-coalescing sender (fastwsrpc.sender) on its own, and as the native transport uses it.

The rules are what the throughput depends on (the first frame of a loop turn at
once, the rest in pieces of at most MAX_FRAMES, a big frame at once) and what
correctness depends on (a control frame never overtakes queued data; nothing is
written after the connection is lost; a sender held by a peer that does not
read is released by a resume, or fails with the close error).
"""

from __future__ import annotations

import asyncio
from typing import Any, List, cast

import pytest
from websockets.utils import accept_key

from fastwsrpc.native import connect_native
from fastwsrpc.sender import BIG_FRAME, MAX_FRAMES, WRITE_HIGH_WATER, CoalescingSender
from fastwsrpc.transport import TransportClosed


async def turn() -> None:
    """Let the loop run the callbacks scheduled so far (the end-of-turn flush among them)."""
    await asyncio.sleep(0)


def sender_writing_to(writes: List[bytes], **options: Any) -> CoalescingSender:
    return CoalescingSender(writes.append, asyncio.get_running_loop(), **options)


async def test_the_first_frame_of_a_turn_goes_out_at_once_the_rest_together_at_its_end() -> None:
    writes: List[bytes] = []
    sender = sender_writing_to(writes)
    sender.send(b"a")
    assert writes == [b"a"]
    sender.send(b"b")
    sender.send(b"c")
    assert writes == [b"a"]
    await turn()
    assert writes == [b"a", b"bc"]
    sender.send(b"d")  # a new turn: at once again
    assert writes == [b"a", b"bc", b"d"]
    await turn()
    assert writes == [b"a", b"bc", b"d"]  # nothing queued: no empty write


async def test_a_frame_sent_alone_starts_no_turn_and_never_overtakes_a_queued_one() -> None:
    writes: List[bytes] = []
    sender = sender_writing_to(writes)
    sender.send_alone(b"a")  # outside a turn: at once, and no turn begins
    sender.send_alone(b"b")
    assert writes == [b"a", b"b"]
    sender.send(b"c")  # the turn's first: at once
    sender.send(b"d")  # queued for the turn's end
    sender.send_alone(b"e")  # in a turn: behind d
    assert writes == [b"a", b"b", b"c"]
    await turn()
    assert writes == [b"a", b"b", b"c", b"de"]
    sender.connection_lost(TransportClosed(1006))
    sender.send_alone(b"f")
    assert writes == [b"a", b"b", b"c", b"de"]  # nothing after the loss


async def test_a_sender_that_never_yields_is_written_in_pieces_of_max_frames() -> None:
    writes: List[bytes] = []
    sender = sender_writing_to(writes)
    for _ in range(1 + 2 * MAX_FRAMES + 3):
        sender.send(b"x")
    assert writes == [b"x", b"x" * MAX_FRAMES, b"x" * MAX_FRAMES]
    await turn()
    assert writes[-1] == b"xxx"


async def test_a_big_frame_is_written_at_once_behind_what_waits() -> None:
    writes: List[bytes] = []
    sender = sender_writing_to(writes)
    big = b"B" * BIG_FRAME
    sender.send(b"first")
    sender.send(b"small")
    sender.send(big)
    assert writes == [b"first", b"small" + big]
    sender.send(b"after")
    await turn()
    assert writes[-1] == b"after"


async def test_a_single_queued_frame_is_written_as_it_is() -> None:
    writes: List[bytes] = []
    sender = sender_writing_to(writes)
    sender.send(b"first")
    second = b"second"
    sender.send(second)
    await turn()
    assert writes[1] is second  # no join, no copy


async def test_a_control_frame_goes_after_the_queued_data_frames() -> None:
    writes: List[bytes] = []
    sender = sender_writing_to(writes)
    sender.send(b"1")
    sender.send(b"2")
    sender.send(b"3")
    sender.send_control(b"PING")
    assert writes == [b"1", b"23", b"PING"]
    sender.send(b"4")  # the queue was flushed: this one starts a turn of its own
    assert writes[-1] == b"4"
    await turn()
    assert writes == [b"1", b"23", b"PING", b"4"]


async def test_write_batch_gets_the_frames_of_a_turn_in_order() -> None:
    writes: List[Any] = []
    batches: List[List[bytes]] = []
    sender = CoalescingSender(writes.append, asyncio.get_running_loop(), write_batch=batches.append, max_frames=3)
    for frame in (b"a", b"b", b"c", b"d", b"e"):
        sender.send(frame)
    assert writes == [b"a"] and batches == [[b"b", b"c", b"d"]]
    sender.flush()
    assert batches == [[b"b", b"c", b"d"], [b"e"]]


async def test_nothing_is_written_once_the_connection_is_lost() -> None:
    writes: List[bytes] = []
    sender = sender_writing_to(writes)
    sender.send(b"first")
    sender.send(b"queued")
    sender.connection_lost(TransportClosed(1006, "gone"))
    await turn()
    sender.send_control(b"PING")
    sender.flush()
    assert writes == [b"first"]


async def test_senders_wait_while_paused_and_resume_together() -> None:
    sender = sender_writing_to([])
    sender.pause_writing()
    assert sender.paused
    waiters = [asyncio.ensure_future(sender.drain()) for _ in range(3)]
    await turn()
    assert not any(w.done() for w in waiters)
    sender.resume_writing()
    assert not sender.paused
    await asyncio.wait_for(asyncio.gather(*waiters), 5)


async def test_waiting_senders_fail_with_the_close_error_when_the_connection_is_lost() -> None:
    sender = sender_writing_to([])
    sender.pause_writing()
    waiter = asyncio.ensure_future(sender.drain())
    await turn()
    closed = TransportClosed(1001, "going away")
    sender.connection_lost(closed)
    with pytest.raises(TransportClosed) as caught:
        await waiter
    assert caught.value is closed
    with pytest.raises(TransportClosed):  # and a late one does not wait for a resume that never comes
        await sender.drain()


# ---------------------------------------------------------------- the native transport


async def _deaf_server(connections: List[asyncio.StreamWriter]) -> asyncio.Server:
    """Accepts the upgrade, then reads nothing more: the client's writes pile up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
        )
        cast(asyncio.Transport, writer.transport).pause_reading()
        connections.append(writer)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_native_send_waits_for_a_peer_that_does_not_read_then_fails_with_the_close_error() -> None:
    connections: List[asyncio.StreamWriter] = []
    server = await _deaf_server(connections)
    port = server.sockets[0].getsockname()[1]
    ws = await connect_native(f"ws://127.0.0.1:{port}/", ping_interval=None, max_size=None)
    try:
        chunk = b"x" * 60_000
        blocked = None
        for _ in range(2000):  # loopback's kernel buffers hold a few MiB at most
            send = asyncio.ensure_future(ws.send(chunk))
            await asyncio.sleep(0)
            if not send.done():
                blocked = send
                break
            send.result()
        assert blocked is not None, "the client never stopped for a peer that does not read"
        assert ws.transport is not None and ws.transport.get_write_buffer_size() > WRITE_HIGH_WATER // 2
        await asyncio.sleep(0.05)
        assert not blocked.done()
        connections[0].transport.abort()  # the peer goes away without a word
        with pytest.raises(TransportClosed) as caught:
            await asyncio.wait_for(blocked, 10)
        assert caught.value.code == 1006
    finally:
        ws.abort()
        server.close()
        await server.wait_closed()
