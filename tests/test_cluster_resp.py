"""The Redis broker's hand-driven connections (``fastwsrpc.cluster.resp``).

The parser of our own must read what hiredis reads, cut anywhere; a connection whose
replies stop coming must not leave its callers waiting; and the broker must route
calls with either parser against a real Redis.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any, AsyncIterator, List, Tuple

import pytest

from fastwsrpc.cluster import Cluster
from fastwsrpc.cluster import resp as resp_module
from fastwsrpc.cluster.resp import PyReader, ReplyError, RespConnection, command

from .brokers import BrokerServer, Node, bounded, eventually, redis_server  # noqa: F401

hiredis = pytest.importorskip("hiredis")


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


#: Replies of every kind the hot path meets, as Redis writes them.
STREAM = (
    b"*3\r\n"
    + _bulk(b"message")
    + _bulk(b"ns:ab")
    + _bulk(b'{"k":"a"}\nxy')
    + b":1\r\n:0\r\n+OK\r\n-ERR unknown command\r\n"
    + b"*3\r\n"
    + _bulk(b"subscribe")
    + _bulk(b"x")
    + b":2\r\n"
    + b"*4\r\n"
    + _bulk(b"pmessage")
    + _bulk(b"ns:*")
    + _bulk(b"ns:t")
    + _bulk(b"")
    + b"$-1\r\n*-1\r\n*0\r\n"
    + _bulk(b"\r\n\n")
    + b"*2\r\n*1\r\n:7\r\n"
    + _bulk(b"hi")
)


def _normal(reply: Any) -> Any:
    """Error replies compared by their message (each parser has its own instance)."""
    if isinstance(reply, Exception):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [_normal(item) for item in reply]
    return reply


def _read_all(reader: Any, chunks: List[bytes]) -> List[Any]:
    out: List[Any] = []
    for chunk in chunks:
        reader.feed(chunk)
        for _ in range(1000):
            reply = reader.gets()
            if reply is False:
                break
            out.append(_normal(reply))
    return out


def _cut(data: bytes, rng: random.Random) -> List[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(12, len(data) - 1))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def test_our_parser_reads_what_hiredis_reads_cut_anywhere() -> None:
    expected = _read_all(hiredis.Reader(replyError=ReplyError), [STREAM])
    assert len(expected) == 12
    assert expected[0] == [b"message", b"ns:ab", b'{"k":"a"}\nxy']
    assert expected[4] == ("error", "ERR unknown command")
    rng = random.Random(24)
    for _ in range(300):
        chunks = _cut(STREAM, rng)
        assert _read_all(PyReader(), chunks) == expected
        assert _read_all(hiredis.Reader(replyError=ReplyError), chunks) == expected
    # byte by byte, the worst case for the parser's restarts
    assert _read_all(PyReader(), [STREAM[i : i + 1] for i in range(len(STREAM))]) == expected


def test_our_parser_refuses_an_unknown_reply_type() -> None:
    reader = PyReader()
    reader.feed(b"?what\r\n")
    with pytest.raises(ConnectionError):
        reader.gets()


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert command(b"SUBSCRIBE", b"a b") == b"*2\r\n$9\r\nSUBSCRIBE\r\n$3\r\na b\r\n"


async def _silent_server() -> Tuple[asyncio.AbstractServer, int]:
    """A server that accepts and never answers: Redis hung."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(1 << 20):  # never answers, until the client drops the connection
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_replies_that_stop_coming_fail_their_callers_after_the_timeout() -> None:
    server, port = await _silent_server()
    lost: List[BaseException] = []
    replies: List[Any] = []
    try:
        conn = RespConnection(lost.append, timeout=0.2)
        await asyncio.get_running_loop().create_connection(lambda: conn, "127.0.0.1", port)
        conn.send(command(b"PING"), replies.append)
        conn.send(command(b"PING"), replies.append)
        await bounded(eventually(lambda: len(replies) == 2 and len(lost) == 1))
        assert all(isinstance(r, ConnectionError) and "within 0.2 s" in str(r) for r in replies)
        with pytest.raises(ConnectionError):
            conn.send(command(b"PING"), replies.append)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_the_server_closes_fails_its_callers() -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1)
        finally:
            writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    lost: List[BaseException] = []
    replies: List[Any] = []
    try:
        conn = RespConnection(lost.append, timeout=30)
        await asyncio.get_running_loop().create_connection(
            lambda: conn, "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        conn.send(command(b"PING"), replies.append)
        await bounded(eventually(lambda: len(lost) == 1))
        assert len(replies) == 1 and isinstance(replies[0], ConnectionError)
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(params=["hiredis", "python"])
async def two_redis_nodes(request: Any, redis_server: BrokerServer, monkeypatch: Any) -> AsyncIterator[List[Node]]:  # noqa: F811
    """Two nodes on a real Redis, the hot path parsed by hiredis or by our own parser."""
    if request.param == "python":
        monkeypatch.setattr(resp_module, "new_reader", PyReader)
    from fastwsrpc.cluster import RedisBroker

    namespace = f"resp{uuid.uuid4().hex[:10]}"
    nodes = [Node(Cluster(RedisBroker(redis_server.url, namespace=namespace))) for _ in range(2)]
    try:
        for node in nodes:
            await node.cluster.start()
        yield nodes
    finally:
        for node in nodes:
            await node.close()


async def test_routed_calls_with_either_parser(two_redis_nodes: List[Node]) -> None:
    a, b = two_redis_nodes
    await b.connect("bob")
    answers = await bounded(asyncio.gather(*(a.cluster.call("bob", "add", [i, 1]) for i in range(200))))
    assert [r.result for r in answers] == [i + 1 for i in range(200)]
    await a.connect("alice")
    assert (await bounded(b.cluster.call("alice", "whoami"))).result == "alice"


async def test_a_heartbeat_refreshes_every_client_record_in_chunks(redis_server: BrokerServer) -> None:  # noqa: F811
    """A node's heartbeat writes its clients' records through a script per chunk (not a SET each): every one
    of 2,500 (three chunks) is there, on this node, with the heartbeat's TTL; one left out is not renewed."""
    import redis.asyncio as aioredis

    from fastwsrpc.cluster import RedisBroker

    namespace = f"hb{uuid.uuid4().hex[:10]}"
    cluster = Cluster(RedisBroker(redis_server.url, namespace=namespace))
    await cluster.start()
    probe = aioredis.from_url(redis_server.url)
    try:
        broker = cluster.broker
        clients = {f"c{i}": () for i in range(2500)}
        await bounded(broker.heartbeat("node-a", clients, 30.0))
        for cid in ("c0", "c999", "c1000", "c2499"):
            assert await broker.locate(cid) == "node-a"
        ttls = await probe.pttl(f"{namespace}:c:c2499"), await probe.pttl(f"{namespace}:c:c0")
        assert all(25_000 < ttl <= 30_000 for ttl in ttls)
        await bounded(broker.heartbeat("node-a", {"c0": ()}, 60.0))
        assert 55_000 < await probe.pttl(f"{namespace}:c:c0") <= 60_000
        assert await probe.pttl(f"{namespace}:c:c1") <= 30_000
    finally:
        await probe.aclose()
        await cluster.close()
