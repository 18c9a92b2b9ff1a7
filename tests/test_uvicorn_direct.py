"""Our codec under uvicorn's sans-I/O protocol (``fastwsrpc/uvicorn_direct.py``), against raw peers.

On the FastAPI path, an open uncompressed connection's frames are parsed by
our ``FrameParser`` and its answers built by ``build_frame``; pings, pongs and
the closing handshake stay uvicorn's. A raw TCP peer shows what any client
sees: the answers, the close codes of protocol faults (as uvicorn's own parser
would give them), fragments with a ping between them, the slowloris watch on a
half-sent frame. Each test runs on both twins of the codec: the twin is the
process's ``_accel.impl`` while the test's server runs.

uvicorn releases for Python 3.9 default to another websockets protocol: there
the same tests check that uvicorn answers alike without us.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator, List, Tuple

import pytest
from fastapi import FastAPI

from fastwsrpc import RpcChannel, WebSocketRpcEndpoint, _accel
from fastwsrpc.uvicorn_direct import FastReader

from .app import ServerMethods
from .support import PROTOCOL_FAULT_IDS, PROTOCOL_FAULTS, ServerThread, masked, raw_connection, read_until_eof

pytestmark = pytest.mark.e2e

CALL = b'{"jsonrpc":"2.0","id":7,"method":"add","params":[3,4]}'


@pytest.fixture
def twin(speedups: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The codec twin every part of the test's server uses."""
    monkeypatch.setattr(_accel, "impl", speedups)
    yield speedups


def serve(**endpoint: Any) -> ServerThread:
    uvicorn_config = {k: endpoint.pop(k) for k in ("ws_max_size",) if k in endpoint}
    app = FastAPI()
    WebSocketRpcEndpoint(ServerMethods(), **endpoint).register_route(app, "/ws")
    return ServerThread(app, **uvicorn_config)


async def read_frame(reader: asyncio.StreamReader) -> Tuple[int, bytes]:
    """One unmasked frame from the server: (opcode, payload)."""
    head = await asyncio.wait_for(reader.readexactly(2), 10)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 10), "big")
    elif length == 127:
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(8), 10), "big")
    return head[0] & 0x0F, await asyncio.wait_for(reader.readexactly(length), 10)


async def test_the_codec_takes_over_an_uncompressed_connection(twin: Any) -> None:
    protocols: List[Any] = []

    async def record(channel: RpcChannel) -> None:
        protocols.append(channel.socket._server)  # type: ignore[attr-defined]

    with serve(on_connect=[record]) as server:
        reader, writer, head = await raw_connection(server.url())
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(masked(twin, 1, CALL))
        assert json.loads((await read_frame(reader))[1]) == {"jsonrpc": "2.0", "id": 7, "result": 7}
        writer.close()
    if type(protocols[0]).__name__ == "WebSocketsSansIOProtocol":
        assert isinstance(protocols[0].conn, FastReader)


@pytest.mark.parametrize(("frames", "code"), PROTOCOL_FAULTS, ids=PROTOCOL_FAULT_IDS)
async def test_protocol_faults_close_with_their_code(twin: Any, frames: Any, code: int) -> None:
    with serve() as server:
        reader, writer, _ = await raw_connection(server.url())
        writer.write(masked(twin, 1, CALL))
        assert (await read_frame(reader))[0] == 1
        writer.write(frames(twin) + b"\x00" * 300)
        data = await read_until_eof(reader)
        assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == code
        writer.close()
        # The server serves the next connection as before.
        reader, writer, _ = await raw_connection(server.url())
        writer.write(masked(twin, 1, CALL))
        assert json.loads((await read_frame(reader))[1])["result"] == 7
        writer.close()


async def test_oversize_is_1009_from_the_header_alone(twin: Any) -> None:
    with serve(ws_max_size=1000) as server:
        reader, writer, _ = await raw_connection(server.url())
        writer.write(b"\x81\xff" + (10**12).to_bytes(8, "big") + b"mask")  # a terabyte announced, nothing sent
        data = await read_until_eof(reader)
        assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == 1009
        writer.close()


async def test_a_ws_max_size_of_zero_refuses_every_non_empty_frame(twin: Any) -> None:
    """As websockets has it: 0 is a limit, not "none" (None is none)."""
    with serve(ws_max_size=0) as server:
        reader, writer, _ = await raw_connection(server.url())
        writer.write(masked(twin, 1, CALL))
        data = await read_until_eof(reader)
        assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == 1009
        writer.close()


async def test_fragments_with_a_ping_between_them(twin: Any) -> None:
    """The ping is answered first (uvicorn's pong), then the message its fragments make."""
    with serve() as server:
        reader, writer, _ = await raw_connection(server.url())
        writer.write(
            masked(twin, 1, CALL[:10], fin=False)
            + masked(twin, 9, b"are you there")
            + masked(twin, 0, CALL[10:30], fin=False)
            + masked(twin, 0, CALL[30:], fin=True)
        )
        assert await read_frame(reader) == (10, b"are you there")
        opcode, answer = await read_frame(reader)
        assert opcode == 1 and json.loads(answer) == {"jsonrpc": "2.0", "id": 7, "result": 7}
        writer.close()


async def test_the_client_closes_and_the_server_echoes_its_code(twin: Any) -> None:
    with serve() as server:
        reader, writer, _ = await raw_connection(server.url())
        writer.write(masked(twin, 1, CALL))
        assert (await read_frame(reader))[0] == 1
        writer.write(masked(twin, 8, (4000).to_bytes(2, "big") + b"bye"))
        data = await read_until_eof(reader)
        assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == 4000
        writer.close()


async def test_a_frame_half_sent_is_cut_by_message_receive_timeout(twin: Any) -> None:
    with serve(message_receive_timeout=0.2) as server:
        reader, writer, _ = await raw_connection(server.url())
        writer.write(masked(twin, 1, CALL)[:10])  # and never the rest
        opcode, payload = await read_frame(reader)  # (uvicorn then waits for the close reply we never send)
        assert opcode == 8 and int.from_bytes(payload[:2], "big") == 1008
        writer.close()
