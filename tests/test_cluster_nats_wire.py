"""The NATS broker's hand-driven connection (``fastwsrpc.cluster.natsproto``), and nats-py's in its place.

The protocol parser against a scripted server (messages cut anywhere, headers, PING,
errors); a handshake against real servers with a password and with TLS; and the
broker's hot path on both wires (its own connection, and nats-py's when the options
ask for what the own one does not do).
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import uuid
from typing import Any, AsyncIterator, List, Optional, Tuple

import pytest

from fastwsrpc.cluster import Cluster, NatsBroker, RpcNodeGoneError, natsproto
from fastwsrpc.cluster.natsproto import NatsConnection, open_connection, supported

from .brokers import NatsServer, Node, bounded, eventually, nats_server  # noqa: F401

Message = Tuple[int, str, str, bytes, int]


def test_the_options_the_own_connection_supports() -> None:
    assert supported("nats://127.0.0.1:4222", {})
    assert supported("tls://u:p@host:4222", {"name": "n", "tls": ssl.create_default_context(), "ping_interval": 5})
    assert not supported("nats://a:4222,nats://b:4222", {})
    assert not supported("ws://127.0.0.1:8080", {})
    assert not supported("nats://127.0.0.1:4222", {"user_credentials": "x.creds"})
    assert not supported("nats://127.0.0.1:4222", {"nkeys_seed": "x.nk"})
    assert not supported("nats://127.0.0.1:4222", {"token": lambda: "t"})


def _hmsg(subject: bytes, sid: int, reply: bytes, head: bytes, payload: bytes) -> bytes:
    args = [subject, b"%d" % sid] + ([reply] if reply else []) + [b"%d" % len(head), b"%d" % (len(head) + len(payload))]
    return b"HMSG " + b" ".join(args) + b"\r\n" + head + payload + b"\r\n"


SCRIPT = (
    b'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n'
    b"MSG a.b 1 5\r\nhello\r\n"
    b"MSG a.c 2 reply.to 0\r\n\r\n"
    b"PING\r\n"
    + _hmsg(b"r.1", 3, b"", b"NATS/1.0 503\r\n\r\n", b"")
    + _hmsg(b"a.d", 1, b"rr", b"NATS/1.0\r\nK: v\r\n\r\n", b"he\r\nl")
    + b"+OK\r\n"
    b"MSG a.e 4 3\r\n\r\n\n\r\n"
)
EXPECTED: List[Message] = [
    (1, "a.b", "", b"hello", 0),
    (2, "a.c", "reply.to", b"", 0),
    (3, "r.1", "", b"", 503),
    (1, "a.d", "rr", b"he\r\nl", 0),
    (4, "a.e", "", b"\r\n\n", 0),
]


async def _scripted(chunks: List[bytes]) -> Tuple[List[Message], List[bytes], NatsConnection]:
    """Feed ``chunks`` to a connection as a server would; what it delivered and what it wrote back."""
    received: List[bytes] = []
    done = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
            received.append(await reader.read(1 << 16))
            await done
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    got: List[Message] = []
    conn = NatsConnection(lambda *m: got.append(m), lambda reason: None, timeout=30)
    try:
        await asyncio.get_running_loop().create_connection(
            lambda: conn, "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        await bounded(eventually(lambda: len(got) == len(EXPECTED) and received))
    finally:
        done.set_result(None)
        conn.close()
        server.close()
        await server.wait_closed()
    return got, received, conn


async def test_the_parser_delivers_messages_cut_anywhere() -> None:
    rng = random.Random(24)
    for _ in range(25):
        cuts = sorted(rng.sample(range(1, len(SCRIPT)), rng.randint(0, 20)))
        chunks = [SCRIPT[a:b] for a, b in zip([0, *cuts], [*cuts, len(SCRIPT)])]
        got, received, conn = await _scripted(chunks)
        assert got == EXPECTED
        assert received == [b"PONG\r\n"]  # the server's PING answered
        assert conn.max_payload == 1048576


async def test_an_unknown_operation_drops_the_connection() -> None:
    lost: List[BaseException] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"WHAT\r\n")
            while await reader.read(1 << 16):  # until the client drops the connection
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        conn = NatsConnection(lambda *m: None, lost.append, timeout=30)
        await asyncio.get_running_loop().create_connection(
            lambda: conn, "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        await bounded(eventually(lambda: len(lost) == 1))
        assert "protocol error" in str(lost[0])
        with pytest.raises(ConnectionError):
            conn.send(b"PING\r\n")
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_that_stops_answering_is_dropped() -> None:
    """PINGs left unanswered for the timeout abort the connection (the server hung)."""
    lost: List[BaseException] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b'INFO {"max_payload":1024}\r\n')
            await reader.read(1 << 16)  # CONNECT and PING: answered with PONG once, then nothing
            writer.write(b"PONG\r\n")
            while await reader.read(1 << 16):  # until the client gives up on us
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        url = f"nats://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        conn = await bounded(open_connection(url, {}, lambda *m: None, lost.append, 0.2))
        await bounded(eventually(lambda: len(lost) == 1))
        assert "no PONG" in str(lost[0]) and conn.max_payload == 1024
    finally:
        server.close()
        await server.wait_closed()


class PasswordNats(NatsServer):
    def command(self) -> List[str]:
        return [*super().command(), "--user", "fw", "--pass", "s3cret"]


class TlsNats(NatsServer):
    def __init__(self, ca: Any) -> None:
        super().__init__()
        cert = ca.issue_cert("127.0.0.1")
        self.cert, self.key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        cert.cert_chain_pems[0].write_to_path(self.cert)
        cert.private_key_pem.write_to_path(self.key)

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def command(self) -> List[str]:
        return [*super().command(), "--tls", "--tlscert", self.cert, "--tlskey", self.key]


async def test_the_handshake_with_a_password_and_with_a_wrong_one() -> None:
    server = PasswordNats().start()
    try:
        url = f"nats://fw:s3cret@127.0.0.1:{server.port}"
        conn = await bounded(open_connection(url, {}, lambda *m: None, lambda r: None, 2.0))
        await bounded(conn.ping())
        conn.close()
        conn = await bounded(
            open_connection(f"nats://127.0.0.1:{server.port}", {"user": "fw", "password": "s3cret"}, *_quiet())
        )
        conn.close()
        with pytest.raises(ConnectionError, match=r"[Aa]uthorization"):
            await bounded(open_connection(f"nats://fw:wrong@127.0.0.1:{server.port}", {}, *_quiet()))
    finally:
        server.close()


def _quiet() -> Tuple[Any, Any, float]:
    return (lambda *m: None), (lambda reason: None), 2.0


async def test_a_cluster_over_tls() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = TlsNats(ca).start()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    namespace = f"w{uuid.uuid4().hex[:10]}"
    nodes: List[Node] = []
    try:
        for _ in range(2):
            broker = NatsBroker(server.url, namespace=namespace, tls=context)
            assert broker.own_connection
            nodes.append(Node(Cluster(broker)))
            await nodes[-1].cluster.start()
        await nodes[1].connect("bob")
        await bounded(eventually(lambda: _lists(nodes[0], "bob")))
        assert (await bounded(nodes[0].cluster.call("bob", "add", [2, 3]))).result == 5
    finally:
        for node in nodes:
            await node.close()
        server.close()


@pytest.fixture(params=[True, False], ids=["own", "nats-py"])
async def two_nodes(request: Any, nats_server: Any) -> AsyncIterator[List[Node]]:  # noqa: F811
    """Two nodes on NATS, the hot path on the broker's own connection or on nats-py's."""
    namespace = f"w{uuid.uuid4().hex[:10]}"
    nodes = [Node(Cluster(NatsBroker(nats_server.url, namespace=namespace, own_connection=request.param)))]
    try:
        nodes.append(Node(Cluster(NatsBroker(nats_server.url, namespace=namespace, own_connection=request.param))))
        for node in nodes:
            await node.cluster.start()
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def _lists(node: Node, client_id: str) -> bool:
    return client_id in await node.cluster.clients()


async def test_routed_calls_on_either_wire(two_nodes: List[Node]) -> None:
    a, b = two_nodes
    await b.connect("bob")
    await bounded(eventually(lambda: _lists(a, "bob")))
    answers = await bounded(asyncio.gather(*(a.cluster.call("bob", "add", [i, 1]) for i in range(300))))
    assert [r.result for r in answers] == [i + 1 for i in range(300)]
    await a.connect("alice")
    await bounded(eventually(lambda: _lists(b, "alice")))
    assert (await bounded(b.cluster.call("alice", "whoami"))).result == "alice"
    await bounded(b.cluster.notify("alice", "hear", ["psst"]))
    await bounded(a.cluster.broadcast("hear", ["all"]))
    alice = next(iter(a.connections))
    await bounded(eventually(lambda: sorted(alice.log) == ["all", "psst"]))


async def test_a_request_to_a_node_nobody_listens_on_fails_at_once_on_either_wire(two_nodes: List[Node]) -> None:
    a, _ = two_nodes
    with pytest.raises(RpcNodeGoneError) as caught:
        await bounded(a.cluster.broker.request("no-such-node", b"{}\n", 30.0), 5)
    assert caught.value.delivered is False


async def test_topics_routed_on_either_wire(two_nodes: List[Node]) -> None:
    a, b = two_nodes
    got: List[Any] = []
    b.cluster.on_topic = lambda topic, data, *position: got.append((topic, data))
    for node in two_nodes:
        node.cluster.per_topic = True
    for i in range(20):
        waiter: Optional[Any] = b.cluster.watch_topic(f"t{i} ~")
        if waiter is not None:
            await bounded(waiter)
        await a.cluster.publish_topic(f"u{i}", -1)
        await a.cluster.publish_topic(f"t{i} ~", i)
    await bounded(eventually(lambda: len(got) == 20))
    assert got == [(f"t{i} ~", i) for i in range(20)]


def test_the_own_connection_is_used_when_it_can_be() -> None:
    assert NatsBroker("nats://127.0.0.1:1").own_connection
    assert not NatsBroker("nats://127.0.0.1:1", user_credentials="x.creds").own_connection
    assert not NatsBroker("nats://127.0.0.1:1", own_connection=False).own_connection
    assert natsproto.supported("nats://127.0.0.1:1", {"name": "x"})
