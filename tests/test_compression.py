"""permessage-deflate (RFC 7692) on the native server, client and codec.

* the codec (both twins, ``speedups``): RSV1 only where negotiated and only on
  a message's first frame, inflating (one frame or fragments, with or without
  context takeover), the inflated size held to ``max_size`` while zlib works
  (the bomb), corrupt data, UTF-8 of inflated text, ``build_frame(rsv1=True)``;
* negotiation on a real native server (loopback): with and without an offer,
  each parameter (``client_max_window_bits``, ``server_no_context_takeover``,
  ``client_no_context_takeover``), a server that declines;
* the threshold, read off the wire (RSV1 of the server's frames);
* the inflate bomb through the server: a 1009 close, and the server goes on;
* interop: the ``websockets`` client against the native server, the native
  client against a ``websockets`` server and against the native server;
* no zlib state for an idle connection.

Chromium (which always offers compression) is in tests/test_browser.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
import struct
import zlib
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.uri import parse_uri

from fastwsrpc import RpcMethodsBase, WebSocketRpcClient
from fastwsrpc.config import DEFAULT_COMPRESSION_THRESHOLD, CompressionConfig
from fastwsrpc.frames import FrameError
from fastwsrpc.native import Compression, NativeWebSocket, connect_native
from fastwsrpc.server import WebSocketRpcServer

pytestmark = pytest.mark.e2e

#: The longest wait for anything on loopback (a bound, never a pause).
BOUND = 10.0
BIG = "compressible " * 1000  # 13 kB of text: over the threshold, deflates well


def deflate(data: bytes, bits: int = 15, compressor: Any = None) -> bytes:
    """One message as a permessage-deflate sender makes it (sync flush, tail off)."""
    c = compressor if compressor is not None else zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out[-4:] == b"\x00\x00\xff\xff"
    return out[:-4]


@functools.cache
def bomb(bits: int) -> bytes:
    """64 MiB of zeros, deflated: about 64 kB (made once per window size)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -bits)
    zeros = bytes(1 << 20)
    data = b"".join(compressor.compress(zeros) for _ in range(64)) + compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
    assert len(data) < 100_000
    return data


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes = b"") -> bytes:
    """A frame by hand (any reserved bits), unmasked unless ``mask``."""
    n = len(payload)
    bit = 0x80 if mask else 0
    head = bytes((0x80 * fin | rsv << 4 | opcode,))
    if n < 126:
        head += bytes((bit | n,))
    elif n < 65536:
        head += bytes((bit | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((bit | 127,)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = (mask * (n // 4 + 1))[:n]
    return head + mask + bytes(a ^ b for a, b in zip(payload, key))


# ------------------------------------------------------------------ the codec, both twins


@pytest.mark.parametrize("opcode", [1, 2])
def test_the_codec_inflates_a_compressed_message(speedups: Any, opcode: int) -> None:
    text = ("héllo wörld " * 50).encode()
    parser = speedups.FrameParser(1 << 20, False, 15)
    assert parser.feed(frame(opcode, deflate(text), rsv=4)) == [(opcode, text)]
    assert parser.feed(frame(opcode, b"plain")) == [(opcode, b"plain")]  # RSV1 unset: not compressed
    assert parser.error is None


def test_fragments_of_a_compressed_message_are_inflated_as_they_come(speedups: Any) -> None:
    text = ("fragmented \u4e2d\u6587 " * 200).encode()
    data = deflate(text)
    cut = len(data) // 3
    wire = frame(1, data[:cut], fin=False, rsv=4) + frame(9, b"ping") + frame(0, data[cut:])
    parser = speedups.FrameParser(1 << 20, False, 15)
    out: List[Tuple[int, bytes]] = []
    for i in range(0, len(wire), 7):  # in pieces: frames are read across feeds
        out += parser.feed(wire[i : i + 7])
    assert out == [(9, b"ping"), (1, text)] and parser.error is None and not parser.receiving()


def test_context_takeover_is_followed_unless_the_peer_resets(speedups: Any) -> None:
    first, second = b"the same words again and again " * 10, b"the same words again and again " * 11
    shared = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire = frame(2, deflate(first, compressor=shared), rsv=4) + frame(2, deflate(second, compressor=shared), rsv=4)
    parser = speedups.FrameParser(1 << 20, False, 15)
    assert parser.feed(wire) == [(2, first), (2, second)]  # the second refers to the first
    # With no_context_takeover, the peer compresses each message on its own, and so do we inflate.
    fresh = frame(2, deflate(first), rsv=4) + frame(2, deflate(second), rsv=4)
    parser = speedups.FrameParser(1 << 20, False, 15, True)
    assert parser.feed(fresh) == [(2, first), (2, second)]
    # Small windows: the peer's window bits are the inflater's.
    parser = speedups.FrameParser(1 << 20, False, 9)
    assert parser.feed(frame(2, deflate(first * 20, bits=9), rsv=4)) == [(2, first * 20)]


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(frame(1, b"x", rsv=2), id="rsv2"),
        pytest.param(frame(1, b"x", rsv=1), id="rsv3"),
        pytest.param(frame(1, b"x", rsv=6), id="rsv1-and-rsv2"),
        pytest.param(frame(9, b"x", rsv=4), id="rsv1-on-a-ping"),
        pytest.param(frame(1, b"ab", fin=False) + frame(0, b"c", rsv=4), id="rsv1-on-a-continuation"),
    ],
)
def test_reserved_bits_outside_permessage_deflate_are_1002(speedups: Any, wire: bytes) -> None:
    parser = speedups.FrameParser(100, False, 15)
    parser.feed(wire)
    assert parser.error == FrameError(1002, "reserved bits must be 0")


def test_rsv1_is_refused_when_compression_was_not_negotiated(speedups: Any) -> None:
    parser = speedups.FrameParser(100, False)
    parser.feed(frame(1, deflate(b"hello"), rsv=4))
    assert parser.error == FrameError(1002, "reserved bits must be 0")


@pytest.mark.parametrize("fragmented", [False, True])
def test_an_inflate_bomb_is_1009_without_the_memory(speedups: Any, fragmented: bool) -> None:
    """64 MiB of zeros deflate to 64 kB; at most max_size + 1 bytes are ever inflated."""
    data = bomb(15)
    if fragmented:
        wire = frame(2, data[:1000], fin=False, rsv=4) + frame(0, data[1000:])
    else:
        wire = frame(2, data, rsv=4)
    import tracemalloc

    parser = speedups.FrameParser(1 << 20, False, 15)
    tracemalloc.start()
    try:
        assert parser.feed(wire) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parser.error is not None and parser.error.code == 1009
    assert peak < 8 << 20, peak  # the frame, a few MiB of inflated output at most: never 64 MiB


def test_a_message_inflating_to_max_size_exactly_passes(speedups: Any) -> None:
    data = b"a" * 1000
    assert speedups.FrameParser(1000, False, 15).feed(frame(2, deflate(data), rsv=4)) == [(2, data)]
    parser = speedups.FrameParser(999, False, 15)
    parser.feed(frame(2, deflate(data), rsv=4))
    assert parser.error is not None and parser.error.code == 1009


def test_corrupt_deflate_data_is_1002(speedups: Any) -> None:
    parser = speedups.FrameParser(1000, False, 15)
    parser.feed(frame(2, b"\xff\xff\xff\xff garbage", rsv=4))
    assert parser.error == FrameError(1002, "invalid compressed data (permessage-deflate)")


def test_inflated_text_is_checked_as_utf8(speedups: Any) -> None:
    parser = speedups.FrameParser(1000, False, 15)
    parser.feed(frame(1, deflate(b"ok \xff not utf-8"), rsv=4))
    assert parser.error == FrameError(1007, "invalid UTF-8 in a text message")
    parser = speedups.FrameParser(1000, False, 15)
    data = deflate("\U0001f600".encode() * 100)
    parser.feed(frame(1, data[:5], fin=False, rsv=4) + frame(0, data[5:]))  # a character cut by a fragment
    assert parser.error is None


def test_build_frame_sets_rsv1_on_data_frames_only(speedups: Any) -> None:
    assert speedups.build_frame(1, b"x", False, True, True) == b"\xc1\x01x"
    assert speedups.build_frame(2, b"x", rsv1=True)[0] == 0xC2
    for opcode in (0, 8, 9, 10):
        with pytest.raises(ValueError, match="RSV1"):
            speedups.build_frame(opcode, b"", rsv1=True)


@pytest.mark.parametrize("bits", [-1, 16, 2**70])
def test_window_bits_are_0_to_15(speedups: Any, bits: int) -> None:
    with pytest.raises(ValueError, match="window_bits"):
        speedups.FrameParser(10, True, bits)


def test_a_window_under_8_bits_is_read_as_8(speedups: Any) -> None:
    data = b"abc" * 1000
    assert speedups.FrameParser(1 << 20, False, 1).feed(frame(2, deflate(data, bits=9), rsv=4)) == [(2, data)]


# ------------------------------------------------------------------ a real native server


class Echo(RpcMethodsBase):
    async def echo(self, text: str) -> str:
        return text


async def _serving(server: WebSocketRpcServer) -> AsyncIterator[str]:
    async with server.listen("127.0.0.1", 0):
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


def _server_socket(server: WebSocketRpcServer) -> NativeWebSocket:
    (channel,) = server.channels
    socket = channel.socket
    assert isinstance(socket, NativeWebSocket)
    return socket


async def _rpc(conn: Any, text: str, call_id: int = 1) -> str:
    await conn.send(json.dumps({"jsonrpc": "2.0", "method": "echo", "params": {"text": text}, "id": call_id}))
    answer = json.loads(await asyncio.wait_for(conn.recv(), BOUND))
    assert answer["id"] == call_id, answer
    return str(answer["result"])


async def _settled(server: WebSocketRpcServer) -> None:
    for _ in range(1000):  # bounded: the server registers the channel right after the 101
        if server.channels:
            return
        await asyncio.sleep(0)
    raise AssertionError("the server has no channel")


async def test_compression_is_agreed_when_offered_and_only_then(speedups: Any) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups)
    async for url in _serving(server):
        async with connect(url, compression="deflate") as conn:
            assert conn.response is not None
            agreed = conn.response.headers["Sec-WebSocket-Extensions"]
            assert agreed == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
            assert await _rpc(conn, BIG) == BIG and await _rpc(conn, "small", 2) == "small"
            await _settled(server)
            assert _server_socket(server).compression == Compression(12, 12, False, False)
        async with connect(url, compression=None) as conn:
            assert conn.response is not None and "Sec-WebSocket-Extensions" not in conn.response.headers
            assert await _rpc(conn, BIG) == BIG
            await _settled(server)
            assert _server_socket(server).compression is None


async def test_a_server_without_compression_declines_the_offer(speedups: Any) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups, compression=None)
    async for url in _serving(server):
        async with connect(url, compression="deflate") as conn:
            assert conn.response is not None and "Sec-WebSocket-Extensions" not in conn.response.headers
            assert await _rpc(conn, BIG) == BIG


@pytest.mark.parametrize(
    "offer, config, expected_header, expected",
    [
        pytest.param(
            dict(client_max_window_bits=10),
            None,
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
            Compression(12, 10, False, False),
            id="client_max_window_bits",
        ),
        pytest.param(
            dict(client_max_window_bits=None),
            None,
            "permessage-deflate; server_max_window_bits=12",
            Compression(12, 15, False, False),  # not offered: the client may use all 15 bits
            id="no-client_max_window_bits",
        ),
        pytest.param(
            dict(server_no_context_takeover=True),
            None,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
            Compression(12, 12, True, False),
            id="server_no_context_takeover-asked",
        ),
        pytest.param(
            dict(client_no_context_takeover=True),
            None,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
            Compression(12, 12, False, True),
            id="client_no_context_takeover-offered",
        ),
        pytest.param(
            {},
            CompressionConfig(server_no_context_takeover=True, client_no_context_takeover=True),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=12; client_max_window_bits=12",
            Compression(12, 12, True, True),
            id="both-no_context_takeover-by-the-server",
        ),
        pytest.param(
            dict(server_max_window_bits=10),
            CompressionConfig(client_max_window_bits=9),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            Compression(10, 9, False, False),
            id="windows-lowered",
        ),
    ],
)
async def test_each_parameter_is_negotiated_and_then_used(
    speedups: Any,
    offer: Dict[str, Any],
    config: Optional[CompressionConfig],
    expected_header: str,
    expected: Compression,
) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups, compression=config or "deflate")
    factory = ClientPerMessageDeflateFactory(**{"client_max_window_bits": True, **offer})
    async for url in _serving(server):
        async with connect(url, extensions=[factory], compression=None) as conn:
            assert conn.response is not None
            assert conn.response.headers["Sec-WebSocket-Extensions"] == expected_header
            for i in range(3):  # several messages: context kept or reset, both ways
                text = BIG + str(i)
                assert await _rpc(conn, text, i) == text
            await _settled(server)
            assert _server_socket(server).compression == expected


# ------------------------------------------------------------------ the wire: threshold, bomb


async def _raw_deflate_connection(url: str) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection that offered permessage-deflate and read the 101 by hand."""
    wsuri = parse_uri(url)
    handshake = ClientProtocol(wsuri, extensions=[ClientPerMessageDeflateFactory()])
    reader, writer = await asyncio.open_connection(wsuri.host, wsuri.port)
    handshake.send_request(handshake.connect())
    writer.write(b"".join(handshake.data_to_send()))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    assert b" 101 " in head and b"permessage-deflate" in head
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader) -> Tuple[int, bool, bytes]:
    """One unmasked frame from the server: opcode, RSV1, payload."""
    b1, b2 = await asyncio.wait_for(reader.readexactly(2), BOUND)
    n = b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return b1 & 0x0F, bool(b1 & 0x40), await asyncio.wait_for(reader.readexactly(n), BOUND)


async def test_messages_under_the_threshold_go_uncompressed(speedups: Any) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups)
    inflater = zlib.decompressobj(-12)
    async for url in _serving(server):
        reader, writer = await _raw_deflate_connection(url)
        try:
            sizes = (10, DEFAULT_COMPRESSION_THRESHOLD - 100, DEFAULT_COMPRESSION_THRESHOLD, 50_000, 20)
            for i, size in enumerate(sizes):
                request = {"jsonrpc": "2.0", "method": "echo", "params": {"text": "x" * size}, "id": i}
                writer.write(frame(1, json.dumps(request).encode(), mask=b"abcd"))  # uncompressed: allowed
                opcode, rsv1, payload = await _read_frame(reader)
                if rsv1:
                    payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
                answer = json.loads(payload)
                assert opcode == 1 and answer["result"] == "x" * size
                assert rsv1 is (len(payload) >= DEFAULT_COMPRESSION_THRESHOLD), (size, len(payload), rsv1)
        finally:
            writer.close()


async def test_an_inflate_bomb_closes_1009_and_the_server_goes_on(speedups: Any) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups, max_message_size=1 << 20)
    async for url in _serving(server):
        reader, writer = await _raw_deflate_connection(url)
        try:
            writer.write(frame(2, bomb(12), rsv=4, mask=b"wxyz"))  # 64 kB on the wire, 64 MiB inflated
            opcode, _, payload = await _read_frame(reader)
            assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1009
        finally:
            writer.close()
        async with connect(url, compression="deflate") as conn:  # the server goes on
            assert await _rpc(conn, BIG) == BIG


# ------------------------------------------------------------------ interop


async def test_the_websockets_client_both_ways_with_large_and_small_messages(speedups: Any) -> None:
    """websockets compresses every message; the server compresses from the threshold on."""
    server = WebSocketRpcServer(Echo(), speedups=speedups, max_message_size=8 << 20)
    texts = ["", "a", BIG, "\u00e9\u4e2d\U0001f600" * 100_000, BIG * 40]
    async for url in _serving(server):
        async with connect(url, compression="deflate", max_size=None) as conn:
            for i, text in enumerate(texts + texts):
                assert await _rpc(conn, text, i) == text


async def test_the_native_client_against_a_websockets_server(speedups: Any) -> None:
    seen: List[str] = []

    async def echo(ws: ServerConnection) -> None:
        seen.append(ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else "")
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression="deflate") as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        conn = await connect_native(f"ws://127.0.0.1:{port}", compression="deflate", speedups=speedups)
        try:
            assert conn.compression is not None and conn.compression.local_max_window_bits == 12
            for text in ("small", BIG, BIG * 50, "\U0001f600" * 30_000):
                await conn.send(text.encode())
                assert await asyncio.wait_for(conn.receive(), BOUND) == text.encode()
        finally:
            await conn.close()
    assert seen == ["permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"]


async def test_the_native_client_declined_by_a_websockets_server(speedups: Any) -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        conn = await connect_native(f"ws://127.0.0.1:{port}", compression="deflate", speedups=speedups)
        try:
            assert conn.compression is None
            await conn.send(BIG.encode())
            assert await asyncio.wait_for(conn.receive(), BOUND) == BIG.encode()
        finally:
            await conn.close()


@pytest.mark.parametrize(
    "config",
    [
        pytest.param("deflate", id="defaults"),
        pytest.param(CompressionConfig(threshold=0, client_no_context_takeover=True), id="client-resets"),
        pytest.param(CompressionConfig(server_max_window_bits=9, client_max_window_bits=9), id="9-bits"),
    ],
)
async def test_the_rpc_client_and_server_both_native(speedups: Any, config: Any) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups)
    async for url in _serving(server):
        async with WebSocketRpcClient(url, compression=config) as client:
            assert isinstance(client.ws, NativeWebSocket) and client.ws.compression is not None
            for text in ("", "small", BIG, BIG * 30):
                assert (await client.other.echo(text=text)).result == text
            await _settled(server)
            assert _server_socket(server).compression == client.ws.compression._replace(
                local_max_window_bits=client.ws.compression.remote_max_window_bits,
                remote_max_window_bits=client.ws.compression.local_max_window_bits,
                local_no_context_takeover=client.ws.compression.remote_no_context_takeover,
                remote_no_context_takeover=client.ws.compression.local_no_context_takeover,
            )


async def test_an_idle_compressed_connection_holds_no_zlib_state(speedups: Any) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups)
    async for url in _serving(server):
        async with WebSocketRpcClient(url, compression="deflate") as client:
            assert isinstance(client.ws, NativeWebSocket)
            assert (await client.other.echo(text="small")).result == "small"
            await _settled(server)
            conn = _server_socket(server)
            assert conn.compression is not None
            assert conn._deflater is None and client.ws._deflater is None  # nothing compressed yet
            assert (await client.other.echo(text=BIG)).result == BIG
            assert conn._deflater is not None and client.ws._deflater is not None  # context takeover: kept


async def test_bad_compression_values_are_refused() -> None:
    with pytest.raises(ValueError, match="compression"):
        WebSocketRpcServer(Echo(), compression="gzip")
    with pytest.raises(ValueError, match="window_bits"):
        CompressionConfig(server_max_window_bits=8)
    with pytest.raises(ValueError, match="compression"):
        await connect_native("ws://127.0.0.1:1/", compression="br")


async def test_a_close_after_a_compressed_message_is_clean(speedups: Any) -> None:
    server = WebSocketRpcServer(Echo(), speedups=speedups)
    async for url in _serving(server):
        async with connect(url, compression="deflate") as conn:
            assert await _rpc(conn, BIG) == BIG
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        assert conn.close_code == 1000
