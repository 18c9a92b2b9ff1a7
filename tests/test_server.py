"""What only the native server does (the rest runs on both servers through the ``server`` fixture).

Authentication before the upgrade, path templates and routes, real protocol
pings, the slowloris watch on a half-received frame, protocol faults answered
with their close codes, TCP back-pressure, and the cluster by client id. Each
test runs the server on both twins of the codec (``speedups``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, List, Optional

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.uri import parse_uri

from fastwsrpc import RpcChannel, RpcHandshakeRejectedError, RpcMethodsBase, RpcRetryConfig, WebSocketRpcClient
from fastwsrpc.server import HandshakeRequest, WebSocketRpcServer

from .app import ServerMethods
from .support import PROTOCOL_FAULT_IDS, PROTOCOL_FAULTS, masked, raw_connection, read_until_eof

pytestmark = pytest.mark.e2e

NO_RETRY = RpcRetryConfig(max_attempts=1)


async def serving(server: WebSocketRpcServer, path: str = "/ws") -> AsyncIterator[str]:
    async with server.listen("127.0.0.1", 0, path=path):
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_authenticate_sees_the_request_and_names_the_client(speedups: Any) -> None:
    seen: List[HandshakeRequest] = []

    async def authenticate(request: HandshakeRequest) -> Optional[str]:
        seen.append(request)
        if request.query.get("token") != "t0k":
            raise RpcHandshakeRejectedError(401, "no token")
        return f"user-{request.path_params['room']}"

    server = WebSocketRpcServer(ServerMethods(), authenticate=authenticate, speedups=speedups)
    async for base in serving(server, "/rooms/{room}"):
        with pytest.raises(RpcHandshakeRejectedError) as refused:
            async with WebSocketRpcClient(f"{base}/rooms/blue", retry_config=NO_RETRY):
                pass
        assert refused.value.status == 401
        async with WebSocketRpcClient(f"{base}/rooms/blue?token=t0k", additional_headers={"X-Who": "me"}) as client:
            assert (await client.other.add(a=1, b=2)).result == 3
            channel = next(iter(server.channels))
            assert channel.context["client_id"] == "user-blue" and channel.context["room"] == "blue"
        assert seen[-1].headers["x-who"] == "me" and seen[-1].path == "/rooms/blue"


async def test_refusals_are_http_statuses(speedups: Any) -> None:
    async def deny(request: HandshakeRequest) -> None:
        raise PermissionError("nobody")

    server = WebSocketRpcServer(
        ServerMethods(), speedups=speedups, routes={"/closed": WebSocketRpcServer(authenticate=deny)}
    )
    async for base in serving(server):
        for path, status in (("/closed", 403), ("/nowhere", 404)):
            with pytest.raises(RpcHandshakeRejectedError) as refused:
                async with WebSocketRpcClient(base + path, retry_config=NO_RETRY):
                    pass
            assert refused.value.status == status
        _reader, writer, _ = await raw_connection(base + "/ws")  # still serving
        writer.close()


async def test_the_server_calls_a_client_by_the_id_in_its_path(speedups: Any) -> None:
    class Client(RpcMethodsBase):
        async def whoami(self) -> str:
            return "alice's client"

    server = WebSocketRpcServer(ServerMethods(), speedups=speedups)
    async for base in serving(server, "/ws/{client_id}"):
        async with WebSocketRpcClient(f"{base}/ws/alice", Client()):
            response = await server.cluster.call("alice", "whoami")
            assert response.result == "alice's client"


async def test_server_pings_drop_a_peer_that_never_answers(speedups: Any) -> None:
    server = WebSocketRpcServer(ServerMethods(), ping_interval=0.05, ping_timeout=0.1, speedups=speedups)
    async for base in serving(server):
        reader, writer, head = await raw_connection(base + "/ws")
        assert head.startswith(b"HTTP/1.1 101")
        data = await read_until_eof(reader)  # pings, then the close 1011, then EOF
        assert data.startswith(b"\x89\x04")
        assert b"\x88" in data and (1011).to_bytes(2, "big") in data
        writer.close()


async def test_a_peer_that_answers_pings_stays(speedups: Any) -> None:
    server = WebSocketRpcServer(ServerMethods(), ping_interval=0.02, ping_timeout=0.5, speedups=speedups)
    async for base in serving(server):
        async with connect(base + "/ws") as ws:  # websockets answers pings itself
            for i in range(10):
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "add", "params": [i, 1]}))
                assert json.loads(await ws.recv())["result"] == i + 1
                await asyncio.sleep(0.02)  # the pace of a slow client, so that pings interleave


async def test_a_frame_half_sent_is_cut_by_message_receive_timeout(speedups: Any) -> None:
    server = WebSocketRpcServer(ServerMethods(), message_receive_timeout=0.2, speedups=speedups)
    async for base in serving(server):
        reader, writer, _ = await raw_connection(base + "/ws")
        frame = masked(speedups, 1, b'{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}')
        writer.write(frame[:10])  # and never the rest
        data = await read_until_eof(reader)
        assert data.startswith(b"\x88") and (1008).to_bytes(2, "big") in data[:4]
        writer.close()


@pytest.mark.parametrize(("frames", "code"), PROTOCOL_FAULTS, ids=PROTOCOL_FAULT_IDS)
async def test_protocol_faults_close_with_their_code(speedups: Any, frames: Any, code: int) -> None:
    server = WebSocketRpcServer(ServerMethods(), speedups=speedups)
    async for base in serving(server):
        reader, writer, _ = await raw_connection(base + "/ws")
        writer.write(frames(speedups) + b"\x00" * 300)
        data = await read_until_eof(reader)
        assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == code
        writer.close()


async def test_oversize_is_1009_from_the_header_alone(speedups: Any) -> None:
    server = WebSocketRpcServer(ServerMethods(), max_message_size=1000, speedups=speedups)
    async for base in serving(server):
        reader, writer, _ = await raw_connection(base + "/ws")
        writer.write(b"\x81\xff" + (10**12).to_bytes(8, "big") + b"mask")  # a terabyte announced, nothing sent
        data = await read_until_eof(reader)
        assert data[:1] == b"\x88" and int.from_bytes(data[2:4], "big") == 1009
        writer.close()


async def test_frames_sent_right_behind_the_handshake_are_read(speedups: Any) -> None:
    server = WebSocketRpcServer(ServerMethods(), speedups=speedups)
    async for base in serving(server):
        wsuri = parse_uri(base + "/ws")
        handshake = ClientProtocol(wsuri)
        reader, writer = await asyncio.open_connection(wsuri.host, wsuri.port)
        handshake.send_request(handshake.connect())
        call = masked(speedups, 1, b'{"jsonrpc":"2.0","id":7,"method":"add","params":[3,4]}')
        writer.write(b"".join(handshake.data_to_send()) + call)  # no wait for the 101
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        header = await asyncio.wait_for(reader.readexactly(2), 10)
        body = await asyncio.wait_for(reader.readexactly(header[1] & 0x7F), 10)
        assert json.loads(body) == {"jsonrpc": "2.0", "id": 7, "result": 7}
        writer.close()


async def test_a_reader_that_stops_pushes_back_over_tcp(speedups: Any) -> None:
    """A handler that blocks fills the budget; the server stops reading and the client's writes back up."""
    gate = asyncio.Event()

    class Slow(RpcMethodsBase):
        async def wait(self) -> None:
            await gate.wait()

    server = WebSocketRpcServer(Slow(), max_pending_requests=2, speedups=speedups)
    async for base in serving(server):
        _reader, writer, _ = await raw_connection(base + "/ws")
        note = masked(speedups, 1, b'{"jsonrpc":"2.0","method":"wait","params":[]' + b" " * 4000 + b"}")
        transport: Any = writer.transport
        for _ in range(5000):  # bounded: the kernel buffers fill long before
            writer.write(note)
            if transport.get_write_buffer_size() > 1024 * 1024:
                break
            await asyncio.sleep(0)  # let the bytes go
        assert transport.get_write_buffer_size() > 1024 * 1024  # the server reads no more
        channel: RpcChannel = next(iter(server.channels))
        assert channel.reading_paused
        gate.set()
        writer.close()


async def test_close_ends_serve_and_every_connection(speedups: Any) -> None:
    server = WebSocketRpcServer(ServerMethods(), speedups=speedups)
    serving_task = asyncio.ensure_future(server.serve("127.0.0.1", 0))
    for _ in range(500):  # bounded: the listener is up in a few loop turns
        if server.sockets:
            break
        await asyncio.sleep(0.01)
    port = server.sockets[0].getsockname()[1]
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        server.close()
        await asyncio.wait_for(serving_task, 10)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_a_failure_in_a_pushed_read_closes_that_connection_only(speedups: Any) -> None:
    """Messages go to the channel straight from data_received: a bug there still closes 1011, cleanly."""
    server = WebSocketRpcServer(ServerMethods(), speedups=speedups)
    async for base in serving(server):
        async with connect(base + "/ws") as ws:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1, 2]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == 3
            channel: RpcChannel = next(iter(server.channels))

            def broken(frame: Any, *args: Any) -> Any:
                raise RuntimeError("a bug in the read path")

            channel._decode = broken
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "add", "params": [1, 2]}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        async with connect(base + "/ws") as other:  # the server and its other connections go on
            await other.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "add", "params": [2, 2]}))
            assert json.loads(await asyncio.wait_for(other.recv(), 10))["result"] == 4
