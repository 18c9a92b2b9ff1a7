"""Sessions on both servers, driven by a raw WebSocket client: idempotent calls run once across reconnects."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Dict, List, Optional

import pytest
from websockets.asyncio.client import connect

from fastwsrpc import RpcMethodsBase
from fastwsrpc.sessions import SESSION_HEADER, SessionStore

from .support import eventually, serve_methods

pytestmark = pytest.mark.e2e


class Counting(RpcMethodsBase):
    """Counts executions; ``slow`` waits for a gate the test opens from its own thread."""

    def __init__(self) -> None:
        super().__init__()
        self.state: Dict[str, Any] = {"runs": 0, "gate": None, "loop": None, "started": 0}
        self.lock = threading.Lock()

    async def count(self, n: int = 0) -> int:
        with self.lock:
            self.state["runs"] += 1
        return n

    async def slow(self, n: int = 0) -> int:
        state = self.state
        if state["gate"] is None:
            state["gate"], state["loop"] = asyncio.Event(), asyncio.get_running_loop()
        with self.lock:
            state["runs"] += 1
            state["started"] += 1
        await state["gate"].wait()
        return n

    def open_gate(self) -> None:
        self.state["loop"].call_soon_threadsafe(self.state["gate"].set)


def call(call_id: Any, method: str, n: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": {"n": n}, "id": call_id})


def session_of(ws: Any) -> Optional[str]:
    value = ws.response.headers.get(SESSION_HEADER)
    return None if value is None else str(value)


async def test_an_idempotent_call_running_when_the_client_left_runs_once(server_kind: str) -> None:
    methods = Counting()
    with serve_methods(server_kind, methods) as srv:
        async with connect(srv.url(), additional_headers={SESSION_HEADER: "new"}) as ws:
            header = session_of(ws)
            assert header is not None and header.endswith("resumed=0")
            session_id = header.split(";")[0]
            await ws.send(call("idem-1", "slow", 7))
            await eventually(lambda: methods.state["started"] == 1, timeout=10)
        # The connection is gone; the handler runs on. The client comes back and asks again.
        async with connect(srv.url(), additional_headers={SESSION_HEADER: session_id}) as ws:
            assert session_of(ws) == f"{session_id}; resumed=1"
            await ws.send(call("idem-1", "slow", 7))
            methods.open_gate()
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert answer == {"jsonrpc": "2.0", "id": "idem-1", "result": 7}
            # A finished one is answered from the record: not run again.
            await ws.send(call("idem-1", "slow", 7))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == 7
        assert methods.state["runs"] == 1


async def test_an_answer_that_came_while_the_client_was_away_is_replayed(server_kind: str) -> None:
    methods = Counting()
    with serve_methods(server_kind, methods) as srv:
        async with connect(srv.url(), additional_headers={SESSION_HEADER: "new"}) as ws:
            session_id = str(session_of(ws)).split(";")[0]
            await ws.send(call("idem-9", "slow", 9))
            await eventually(lambda: methods.state["started"] == 1, timeout=10)
        methods.open_gate()  # it may finish before the client is back (replayed) or after (waited for): both count
        async with connect(srv.url(), additional_headers={SESSION_HEADER: session_id}) as ws:
            await ws.send(call("idem-9", "slow", 9))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == 9
            # Ordinary ids are not remembered: each runs.
            await ws.send(call(1, "count", 1))
            await ws.send(call(1, "count", 1))
            got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
            assert [a["result"] for a in got] == [1, 1]
        assert methods.state["runs"] == 3


async def test_an_unknown_session_starts_a_new_one_and_browsers_are_told_in_a_first_message(
    server_kind: str,
) -> None:
    with serve_methods(server_kind, Counting()) as srv:
        async with connect(srv.url(), additional_headers={SESSION_HEADER: "no-such-session"}) as ws:
            assert str(session_of(ws)).endswith("resumed=0")
        async with connect(srv.url() + "?fastwsrpc_session=new") as ws:
            notice = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert notice["method"] == "$/session" and notice["params"]["resumed"] is False
            first = notice["params"]["id"]
        async with connect(srv.url() + f"?fastwsrpc_session={first}") as ws:
            notice = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert notice["params"] == {"id": first, "resumed": True, "ttl": 120.0}
        async with connect(srv.url()) as ws:  # no session asked for: none given, nothing sent
            assert session_of(ws) is None


async def test_sessions_can_be_turned_off(server_kind: str) -> None:
    with serve_methods(server_kind, Counting(), session_ttl=None) as srv:
        async with connect(srv.url(), additional_headers={SESSION_HEADER: "new"}) as ws:
            assert session_of(ws) is None


def test_answers_past_the_bound_while_away_make_the_session_not_resumable() -> None:
    async def main() -> None:
        store = SessionStore(ttl=60, max_answer_bytes=100)
        session, resumed = store.open("new")
        assert session is not None and not resumed
        delivered: List[bytes] = []
        deliver = delivered.append
        session.attach(deliver)
        assert session.admit("idem-1") == ("run", None)
        session.finished("idem-1", b"x" * 60)
        assert delivered == [b"x" * 60]
        session.detach(deliver)
        assert session.admit("idem-2") == ("run", None)
        session.finished("idem-2", b"y" * 60)  # past the bound: idem-1's answer, delivered, makes room
        assert list(session.answers) == ["idem-2"] and not session.broken
        assert session.admit("idem-3") == ("run", None)
        session.finished("idem-3", b"z" * 60)  # past it again, and only answers the client never saw are left
        again, resumed = store.open(session.id)
        assert again is not session and not resumed  # told: the session could not be kept
        store.close()

    asyncio.run(main())


def test_a_peer_cannot_grow_sessions_or_their_running_calls_without_bound() -> None:
    async def main() -> None:
        store = SessionStore(ttl=60, max_running=2, max_sessions=3)
        kept, _ = store.open("new")
        assert kept is not None
        kept.attach(print)  # its client is here: never evicted
        for _ in range(10):  # a peer asking for new sessions again and again
            session, _ = store.open("new")
            assert session is not None
        assert len(store) == 3 and store.open(kept.id)[0] is kept
        assert [kept.admit(f"idem-{i}")[0] for i in range(3)] == ["run", "run", "refuse"]
        kept.finished("idem-0", b"{}")
        assert kept.admit("idem-2")[0] == "run"  # room again
        store.close()

    asyncio.run(main())


async def test_past_the_running_bound_an_idempotent_call_is_refused_with_its_limit(server_kind: str) -> None:
    from fastwsrpc.sessions import DEFAULT_MAX_RUNNING

    methods = Counting()
    with serve_methods(server_kind, methods) as srv:
        async with connect(srv.url(), additional_headers={SESSION_HEADER: "new"}) as ws:
            for i in range(DEFAULT_MAX_RUNNING + 1):
                await ws.send(call(f"idem-{i}", "slow", i))
            refused = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert refused["id"] == f"idem-{DEFAULT_MAX_RUNNING}" and refused["error"]["code"] == -32001
            assert refused["error"]["data"]["limit"] == "session_max_running"
            methods.open_gate()
