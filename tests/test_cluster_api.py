"""The cluster API, the same tests on each broker: in-process, Redis, NATS.

Two or three nodes live in this process, each its own :class:`Cluster` with its own
broker object (so on Redis and NATS they talk through the real server, exactly as
separate processes would); clients are real channels on memory links. What only
separate processes can show (a node SIGKILLed, 1,000 WebSocket connections) is in
``test_cluster_e2e.py``.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, List

import pytest

from fastwsrpc.cluster import (
    REPLACED_CLOSE_CODE,
    REPLACED_REASON,
    Cluster,
    LocalBroker,
    LocalHub,
    RpcNodeGoneError,
    broker_from_url,
)
from fastwsrpc.cluster.base import Broker
from fastwsrpc.errors import (
    RemoteValueError,
    RpcBackpressureError,
    RpcChannelClosedError,
    RpcClientNotFoundError,
    RpcDuplicateClientError,
    RpcInternalError,
    RpcTimeoutError,
    UnknownMethodError,
)

from .brokers import Node, bounded, eventually, nats_server, redis_server  # noqa: F401

MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture(params=["local", "redis", "nats"])
async def make_node(request: Any) -> AsyncIterator[MakeNode]:
    """Makes nodes of one cluster on the parametrised broker; closes them at the end."""
    kind = request.param
    namespace = f"t{uuid.uuid4().hex[:12]}"
    hub = LocalHub()
    url = ""
    if kind != "local":
        url = request.getfixturevalue(f"{kind}_server").url
    made: List[Node] = []

    async def make(**options: Any) -> Node:
        broker: Broker = LocalBroker(hub) if kind == "local" else broker_from_url(url, namespace=namespace)
        options.setdefault("presence_ttl", 3.0)
        options.setdefault("heartbeat_interval", 0.2)
        node = Node(Cluster(broker, **options))
        made.append(node)
        return node

    yield make
    for node in made:
        await bounded(node.close())


async def sees(node: Node, *client_ids: str, group: Any = None) -> None:
    """Wait until ``node`` lists these ids (presence travels through the broker)."""
    await eventually(lambda: _lists(node, client_ids, group))


async def _lists(node: Node, client_ids: Any, group: Any) -> bool:
    return set(client_ids) <= set(await node.cluster.clients(group))


# ------------------------------------------------------------------ calls
async def test_call_across_nodes_and_on_the_same_node(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await a.connect("alice")
    await b.connect("bob")
    await sees(a, "alice", "bob")
    assert (await bounded(a.cluster.call("bob", "add", {"a": 1, "b": 2}))).result == 3
    assert (await bounded(b.cluster.call("alice", "add", [40, 2]))).result == 42
    assert (await bounded(a.cluster.call("alice", "whoami"))).result == "alice"
    assert (await bounded(a.cluster.call("bob", "whoami", timeout=5))).result == "bob"


async def test_remote_errors_raise_what_a_local_call_raises(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await b.connect("bob")
    await sees(a, "bob")
    for node in (a, b):  # routed, then local: the same exceptions
        with pytest.raises(UnknownMethodError) as unknown:
            await bounded(node.cluster.call("bob", "no_such_method"))
        assert unknown.value.code == -32601
        with pytest.raises(RpcInternalError):
            await bounded(node.cluster.call("bob", "fail"))
        with pytest.raises(RemoteValueError) as custom:
            await bounded(node.cluster.call("bob", "fail_with", {"code": -32010, "message": "no", "data": {"x": [1]}}))
        assert type(custom.value) is RemoteValueError
        assert (custom.value.code, custom.value.message, custom.value.data) == (-32010, "no", {"x": [1]})
        assert custom.value.response is not None and custom.value.response.error is not None


async def test_unknown_client_id_raises_at_once(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await b.connect("bob")
    await sees(a, "bob")
    with pytest.raises(RpcClientNotFoundError):
        await bounded(a.cluster.call("nobody", "whoami"), 5)
    with pytest.raises(RpcClientNotFoundError):
        await bounded(a.cluster.notify("nobody", "hear", ["x"]), 5)
    with pytest.raises(RpcClientNotFoundError):
        await bounded(a.cluster.join("nobody", "room"), 5)


async def test_a_client_that_left_is_not_found(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    bob = await b.connect("bob")
    await sees(a, "bob")
    assert (await bounded(a.cluster.call("bob", "whoami"))).result == "bob"  # and a's location cache knows b
    await bob.close()
    await eventually(lambda: not b.cluster.local_clients())
    with pytest.raises(RpcClientNotFoundError):
        await bounded(a.cluster.call("bob", "whoami"), 5)
    await eventually(lambda: _none_listed(a))


async def _none_listed(node: Node) -> bool:
    return not await node.cluster.clients()


async def test_nested_calls_across_nodes_do_not_deadlock(make_node: MakeNode) -> None:
    """alice (on a) -> a routes to bob (on b) -> bob calls his server b -> b routes to alice -> answers."""
    a, b = await make_node(), await make_node()
    alice = await a.connect("alice")
    await b.connect("bob")
    await sees(a, "alice", "bob")
    await sees(b, "alice", "bob")
    response = await bounded(
        alice.client.call(
            "call_client",
            {
                "client_id": "bob",
                "method": "ask_server",
                "params": {"method": "call_client", "params": {"client_id": "alice", "method": "whoami"}},
            },
        )
    )
    assert response.result == "alice"


async def test_timeout_of_a_routed_call(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    bob = await b.connect("bob")
    await sees(a, "bob")
    with pytest.raises(RpcTimeoutError):
        await bounded(a.cluster.call("bob", "sleep", {"seconds": 30, "key": "t"}, timeout=0.3))
    # The holding node gave up too, and told the client to stop ($/cancelRequest).
    await eventually(lambda: ("cancelled", "t") in bob.log)


async def test_a_caller_that_gives_up_cancels_the_remote_call(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    bob = await b.connect("bob")
    await sees(a, "bob")
    task = asyncio.ensure_future(a.cluster.call("bob", "sleep", {"seconds": 30, "key": "c"}))
    await eventually(lambda: ("sleeping", "c") in bob.log)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(task)
    await eventually(lambda: ("cancelled", "c") in bob.log)


async def test_routed_calls_in_flight_are_bounded(make_node: MakeNode) -> None:
    a, b = await make_node(max_routed_calls=2), await make_node()
    bob = await b.connect("bob")
    await sees(a, "bob")
    waiting = [asyncio.ensure_future(a.cluster.call("bob", "sleep", {"seconds": 30, "key": str(i)})) for i in range(2)]
    await eventually(lambda: sum(1 for e in bob.log if e[0] == "sleeping") == 2)
    with pytest.raises(RpcBackpressureError):
        await bounded(a.cluster.call("bob", "whoami"), 5)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert (await bounded(a.cluster.call("bob", "whoami"))).result == "bob"  # the budget is back


async def test_calls_waiting_on_a_node_that_stops_fail(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await b.connect("bob")
    await sees(a, "bob")
    task = asyncio.ensure_future(a.cluster.call("bob", "sleep", {"seconds": 60}))
    await eventually(lambda: b.cluster._serving)
    await b.close()
    with pytest.raises(RpcChannelClosedError):
        await bounded(task)


async def test_many_routed_calls_in_flight_each_get_their_own_answer(make_node: MakeNode) -> None:
    # Requests and replies issued together leave in one batch (Redis): none may be
    # lost, duplicated or answered with another's reply.
    a, b = await make_node(), await make_node()
    await a.connect("alice")
    await b.connect("bob")
    await sees(a, "alice", "bob")
    results = await bounded(
        asyncio.gather(
            *(a.cluster.call("bob", "add", [i, 1]) for i in range(300)),
            *(b.cluster.call("alice", "add", [i, 2]) for i in range(300)),
        )
    )
    assert [r.result for r in results] == [i + 1 for i in range(300)] + [i + 2 for i in range(300)]


async def test_a_request_nobody_receives_fails_at_once_as_not_delivered(make_node: MakeNode) -> None:
    # The broker's proof that nobody got it is what lets the cluster retry elsewhere,
    # and what fails a call to a dead node without waiting for any timeout. (A slow
    # heartbeat: its probe of a node found dead fails what waits there as maybe
    # delivered, which is right for calls that did reach it, and would race this.)
    a = await make_node(heartbeat_interval=5.0, presence_ttl=15.0)
    await a.connect("alice")
    for _ in range(3):  # alone, and with other requests in the same batch
        with pytest.raises(RpcNodeGoneError) as gone:
            await bounded(a.cluster.broker.request("no-such-node", b'{"op":"ping"}\n', None), 5)
        assert gone.value.delivered is False
    outcomes = await bounded(
        asyncio.gather(
            *(a.cluster.broker.request("no-such-node", b'{"op":"ping"}\n', None) for _ in range(20)),
            return_exceptions=True,
        ),
        5,
    )
    assert all(isinstance(o, RpcNodeGoneError) and not o.delivered for o in outcomes)


async def test_a_peer_probe_does_not_outrun_the_proof_that_nobody_received(make_node: MakeNode) -> None:
    # The probe that runs with each heartbeat (woken at once by a connect) may see the
    # node gone before the request's own send is answered; that answer still decides.
    a = await make_node(heartbeat_interval=5.0, presence_ttl=15.0)
    await a.connect("alice")
    broker = a.cluster.broker
    outcomes = await bounded(
        asyncio.gather(
            *(broker.request("no-such-node", b'{"op":"ping"}\n', None) for _ in range(5)),
            broker.check_peers(),
            return_exceptions=True,
        ),
        5,
    )
    assert all(isinstance(o, RpcNodeGoneError) and o.delivered is False for o in outcomes[:5]), outcomes


# ------------------------------------------------------------------ notifications, broadcast, groups
async def test_notify_across_nodes(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    bob = await b.connect("bob")
    await sees(a, "bob")
    await bounded(a.cluster.notify("bob", "hear", ["routed"]))
    await bounded(b.cluster.notify("bob", "hear", {"text": "local"}))
    await eventually(lambda: sorted(bob.log) == ["local", "routed"])


async def test_broadcast_reaches_every_connection_once(make_node: MakeNode) -> None:
    a, b, c = await make_node(), await make_node(), await make_node()
    conns = [await node.connect(f"{name}{i}") for name, node in (("a", a), ("b", b)) for i in range(10)]
    await sees(c, *(conn.client_id for conn in conns))
    await bounded(c.cluster.broadcast("hear", ["one"]))  # from a node holding nobody
    await eventually(lambda: all(conn.log == ["one"] for conn in conns))
    await bounded(a.cluster.broadcast("hear", ["two"]))
    await eventually(lambda: all(conn.log == ["one", "two"] for conn in conns))


async def test_groups_across_nodes(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    a1, a2 = await a.connect("a1"), await a.connect("a2")
    b1, b2 = await b.connect("b1"), await b.connect("b2")
    await sees(a, "a1", "a2", "b1", "b2")
    await bounded(a.cluster.join("b1", "room"))  # remote client
    await bounded(a.cluster.join("a1", "room"))  # local client
    await bounded(b.cluster.join("a2", "other"))
    await eventually(lambda: _group_is(a, "room", ["a1", "b1"]))
    await eventually(lambda: _group_is(b, "room", ["a1", "b1"]))
    await bounded(b.cluster.broadcast("hear", ["to room"], group="room"))
    await eventually(lambda: a1.log == ["to room"] and b1.log == ["to room"])
    await bounded(a.cluster.broadcast("hear", ["to all"]))
    await eventually(lambda: a2.log == ["to all"] and b2.log == ["to all"] and b1.log == ["to room", "to all"])

    await bounded(b.cluster.leave("a1", "room"))
    await eventually(lambda: _group_is(b, "room", ["b1"]))
    await b1.close()  # membership belongs to the connection
    await eventually(lambda: _group_is(a, "room", []))
    assert await a.cluster.clients("other") == ["a2"]


async def _group_is(node: Node, group: str, members: List[str]) -> bool:
    return await node.cluster.clients(group) == members


# ------------------------------------------------------------------ duplicates
async def test_a_newer_connection_replaces_the_older_on_the_same_node(make_node: MakeNode) -> None:
    a = await make_node()
    old = await a.connect("dup")
    new = await a.connect("dup")
    await eventually(lambda: old.server.is_closed())
    assert (old.server_link.close_code, old.server_link.close_reason) == (REPLACED_CLOSE_CODE, REPLACED_REASON)
    assert a.cluster.local_clients() == ["dup"]
    await eventually(lambda: old.tasks[0].done())  # the old one's detach must not drop the new one
    assert (await bounded(a.cluster.call("dup", "whoami"))).result == "dup"
    assert not new.server.is_closed()


async def test_a_newer_connection_replaces_the_older_on_another_node(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    old = await a.connect("dup")
    await sees(b, "dup")
    new = await b.connect("dup")
    await eventually(lambda: old.server.is_closed())
    assert (old.server_link.close_code, old.server_link.close_reason) == (REPLACED_CLOSE_CODE, REPLACED_REASON)
    await eventually(lambda: not a.cluster.local_clients())
    assert not new.server.is_closed()
    new.client.methods.name = "the new one"  # type: ignore[attr-defined]
    # From the node that held it before, the call now goes to the new connection.
    await eventually(lambda: _answers(a, "dup", "the new one"))
    assert await a.cluster.clients() == ["dup"]


async def _answers(node: Node, client_id: str, expected: str) -> bool:
    try:
        return bool((await bounded(node.cluster.call(client_id, "whoami"), 5)).result == expected)
    except RpcClientNotFoundError:
        return False


async def test_reject_mode_refuses_a_second_connection(make_node: MakeNode) -> None:
    a, b = await make_node(on_duplicate="reject"), await make_node(on_duplicate="reject")
    first = await a.connect("only")
    with pytest.raises(RpcDuplicateClientError):
        await a.cluster.attach("only", (await a.connect("other", attach=False)).server)
    await sees(b, "only")
    with pytest.raises(RpcDuplicateClientError):
        await b.cluster.attach("only", (await b.connect("other2", attach=False)).server)
    assert not first.server.is_closed()
    assert (await bounded(b.cluster.call("only", "whoami"))).result == "only"
    await first.close()
    await eventually(lambda: not a.cluster.local_clients())
    await bounded(b.cluster.attach("only", (await b.connect("later", attach=False)).server))  # free again


# ------------------------------------------------------------------ construction
def test_construction_needs_no_event_loop() -> None:
    cluster = Cluster()
    assert isinstance(cluster.broker, LocalBroker)
    assert len(cluster.node_id) == 32
    with pytest.raises(ValueError):
        Cluster(on_duplicate="ignore")
    with pytest.raises(ValueError):
        Cluster(presence_ttl=1.0, heartbeat_interval=2.0)


def test_broker_from_url() -> None:
    assert isinstance(broker_from_url("memory://"), LocalBroker)
    named = broker_from_url("memory://shared")
    assert isinstance(named, LocalBroker) and named.hub is LocalHub.named("shared")
    redis_broker = broker_from_url("redis://127.0.0.1:1/0", namespace="x")
    assert type(redis_broker).__name__ == "RedisBroker"
    assert type(broker_from_url("rediss://127.0.0.1:1/0")).__name__ == "RedisBroker"
    assert type(broker_from_url("nats://127.0.0.1:1")).__name__ == "NatsBroker"
    with pytest.raises(ValueError, match="unknown broker URL scheme"):
        broker_from_url("kafka://x")


@pytest.mark.parametrize("module,extra,url", [("redis", "redis", "redis://x"), ("nats", "nats", "nats://x")])
def test_a_missing_extra_names_it(monkeypatch: Any, module: str, extra: str, url: str) -> None:
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import now fails, as if not installed
    with pytest.raises(ImportError, match=rf"pip install fastwsrpc\[{extra}\]"):
        broker_from_url(url)


async def test_a_single_node_cluster_works_without_any_server() -> None:
    node = Node(Cluster())
    try:
        await node.connect("solo")
        assert await node.cluster.clients() == ["solo"]
        assert (await bounded(node.cluster.call("solo", "add", [1, 2]))).result == 3
        await node.cluster.join("solo", "g")
        await node.cluster.broadcast("hear", ["hi"], group="g")
        conn = next(iter(node.connections))
        await eventually(lambda: conn.log == ["hi"])
        with pytest.raises(RpcClientNotFoundError):
            await node.cluster.call("nobody", "whoami")
    finally:
        await node.close()
