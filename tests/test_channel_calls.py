"""Calls both ways on a memory pair (no network), on both twins of the hot path.

Everything the channel does with a call once a frame is in hand: params
(named, positional, typed), results, errors and their classes, batches,
notifications, nested calls, discovery, timeouts, cancellation that crosses to
the other side, and fastapi-ws-rpc's promise store. What only a real socket can
show (the wire as other clients see it, the adapters, TLS, reconnect, faults)
stays in ``test_e2e_*.py``.

Every test takes ``speedups`` and hands it to ``channel_pair``, so each runs
on the pure and the compiled twin in the same pytest run. Nothing here sleeps:
tests wait on a condition with ``until`` (loop turns, no clock); the only
clocks are the call timeouts under test.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, Tuple, Type

import pytest

from fastwsrpc import (
    RemoteValueError,
    RpcChannel,
    RpcChannelClosedError,
    RpcInternalError,
    RpcInvalidParamsError,
    RpcInvalidRequestError,
    RpcInvalidStateError,
    RpcMethodsBase,
    RpcNotConnectedError,
    RpcParseError,
    RpcPromise,
    RpcServerOverloadedError,
    RpcTimeoutError,
    UnknownMethodError,
)
from fastwsrpc.testing import channel_pair, until

from .app import ObservedClient, ObservedServer, Point, ServerMethods, User
from .support import methods, sent, settled

# ---------------------------------------------------------------- params, results


async def test_named_and_positional_params(speedups: Any) -> None:
    """JSON-RPC params are an object or an array; ``.other`` and ``call`` build both."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        assert (await client.other.add(a=1, b=2)).result == 3
        assert (await client.other.subtract(42, 23)).result == 19
        assert (await client.call("subtract", {"subtrahend": 23, "minuend": 42})).result == 19
        assert (await client.call("concat", ["hello", " world"])).result == "hello world"
        assert (await client.other.concat(a="hello", b=" world")).result == "hello world"
        assert (await client.other.concat()).result == ""


async def test_mixing_positional_and_named_is_refused_before_sending(speedups: Any) -> None:
    """JSON-RPC has no mixed params: the mistake is the caller's, so nothing goes out."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        with pytest.raises(TypeError, match="positional or named"):
            await client.other.add(1, b=2)
        assert sent(client) == 0 and client.pending_count == 0


async def test_the_server_calls_the_client_too(speedups: Any) -> None:
    """The channel is symmetric: either side calls, directly or from inside a handler."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        assert (await server.other.multiply(x=6, y=7)).result == 42
        assert (await server.call("join", ["a", "b", "c"])).result == "a-b-c"
        assert (await client.other.call_client(method="multiply", params={"x": 6, "y": 7})).result == 42
        assert (await client.other.call_client(method="join", params=["a", "b", "c"])).result == "a-b-c"
        await settled(server, client)


async def test_nested_calls_five_levels_deep(speedups: Any) -> None:
    """Each handler waits on a call back to the other side: the readers must keep reading."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        response = await client.other.nested(depth=5)
        assert response.result == ["server", "client", "server", "client", "server", "client"]
        await settled(server, client)


async def test_structured_results_are_encoded_as_json(speedups: Any) -> None:
    """pydantic models, msgspec structs and dataclasses go out as objects; what cannot is -32603."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        assert (await client.other.user()).result == {"name": "ada", "tags": ["x", "y"]}
        assert (await client.other.point()).result == {"x": 1, "y": 2}
        assert (await client.other.box()).result == {"width": 1.5, "height": 2.0}
        assert (await client.other.nothing()).result is None
        details = (await client.other.get_process_details()).result
        assert isinstance(details["pid"], int) and isinstance(details["cmd"], list)
        with pytest.raises(RpcInternalError, match="could not be encoded"):
            await client.other.unencodable()


async def test_utility_methods_on_both_sides(speedups: Any) -> None:
    """``echo`` and ``ping`` answer on any RpcUtilityMethods side; ``channel.ping`` calls the peer's."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        assert (await client.other.echo(text="hi")).result == "hi"
        assert (await client.other.ping()).result == "pong"
        assert (await client.ping()).result == "pong"
        assert (await server.ping()).result == "pong"


async def test_private_names_are_not_exposed(speedups: Any) -> None:
    """Only public methods are callable: nothing else of the object leaks."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        for name in ("_private", "__init__", "_copy_", "channel", "notes"):
            with pytest.raises(UnknownMethodError):
                await client.call(name)
        doc = (await client.call("rpc.discover")).result
        assert not [m["name"] for m in doc["methods"] if m["name"].startswith("_") or m["name"] == "channel"]


async def test_plain_def_methods_are_exposed_and_run_in_a_worker_thread(speedups: Any) -> None:
    """A plain ``def`` is callable, off the event loop (as FastAPI runs sync endpoints), and listed."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        assert (await client.call("not_async")).result == "never"
        assert (await client.call("thread_name")).result != threading.current_thread().name
        doc = (await client.call("rpc.discover")).result
        assert "not_async" in {m["name"] for m in doc["methods"]}


async def test_each_channel_gets_its_own_copy_of_the_methods(speedups: Any) -> None:
    """The object given is a template: the copy is bound to the channel it serves."""
    template = ObservedClient()
    async with channel_pair(ObservedServer(), template, speedups=speedups) as (server, client):
        assert not template.bound
        with pytest.raises(RpcInvalidStateError, match="not bound to a connection"):
            template.channel  # noqa: B018
        assert client.methods is not template and client.methods.channel is client
        assert server.methods.channel is server


async def test_a_thousand_concurrent_calls(speedups: Any) -> None:
    """Answers find their callers by id, whatever order they come back in."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        responses = await asyncio.gather(*(client.other.add(a=i, b=i) for i in range(1000)))
        assert [r.result for r in responses] == [2 * i for i in range(1000)]
        await settled(server, client)


# ---------------------------------------------------------------- notifications


async def test_notifications_are_delivered_and_never_answered(speedups: Any) -> None:
    """A notification gets no answer: not a result, not an error (unknown method, failure, bad params)."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        await client.notify("note", {"text": "a"})
        await client.notify("note", ["b"])  # positional works too
        await client.notify("no_such_method", [1])
        await client.notify("fail")
        await client.notify("add", {"a": 1})
        await until(lambda: sorted(methods(server).notes) == ["a", "b"])
        await settled(server, client)
        assert sent(server) == 0
        assert (await client.other.add(a=1, b=1)).result == 2  # the only answer
        assert sent(server) == 1


async def test_the_server_notifies_the_client(speedups: Any) -> None:
    """Notifications go both ways, as calls do."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        await server.notify("note", {"text": "hi"})
        await until(lambda: methods(client).notes == ["hi"])
        assert sent(client) == 0


# ---------------------------------------------------------------- batches


async def test_a_mixed_batch_answers_calls_in_order_and_errors_per_item(speedups: Any) -> None:
    """One failing item does not hide the others: each response carries its own result or error."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        responses = await client.call_batch(
            [
                ("add", {"a": 1, "b": 2}),
                ("note", {"text": "n"}, True),
                {"method": "subtract", "params": [10, 4]},
                ("missing", None),
                ("add", {"a": 1}),
                ("fail",),
                {"method": "note", "params": {"text": "m"}, "notification": True},
                ("concat", ["x", "y"]),
            ]
        )
        assert len(responses) == 6  # the two notifications have no response
        assert [r.result for r in responses[:2]] == [3, 6]
        codes = [r.error.code if r.error is not None else None for r in responses[2:]]
        assert codes == [-32601, -32602, -32603, None]
        assert responses[5].result == "xy"
        await until(lambda: sorted(methods(server).notes) == ["m", "n"])
        await settled(server, client)


async def test_a_batch_of_notifications_only_gets_no_answer(speedups: Any) -> None:
    """The spec: a batch of notifications is answered with nothing at all."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        assert await client.call_batch([("note", {"text": "a"}, True), ("note", ["b"], True)]) == []
        await until(lambda: sorted(methods(server).notes) == ["a", "b"])
        await settled(server, client)
        assert sent(server) == 0 and client.pending_count == 0


async def test_an_empty_batch_is_refused_before_sending(speedups: Any) -> None:
    """The spec makes ``[]`` an invalid request: the caller is told, nothing goes out."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        with pytest.raises(ValueError, match="at least one"):
            await client.call_batch([])
        assert sent(client) == 0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (-32700, RpcParseError),
        (-32600, RpcInvalidRequestError),
        (-32601, UnknownMethodError),
        (-32602, RpcInvalidParamsError),
        (-32603, RpcInternalError),
        (-32001, RpcServerOverloadedError),
        (-32000, RemoteValueError),
        (-32010, RemoteValueError),
    ],
)
async def test_a_remote_error_raises_the_class_of_its_code(
    code: int, cls: Type[RemoteValueError], speedups: Any
) -> None:
    """A method may answer any code; the caller raises the class of that code, with message and data."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        with pytest.raises(RemoteValueError) as raised:
            await client.other.fail_with_code(code=code, message="insufficient funds")
        assert type(raised.value) is cls
        assert (raised.value.code, raised.value.message, raised.value.data) == (
            code,
            "insufficient funds",
            {"hint": "custom"},
        )
        assert raised.value.response is not None and raised.value.response.id is not None
        assert raised.value.response.error is not None and raised.value.response.error.code == code


async def test_the_standard_errors_of_a_call(speedups: Any) -> None:
    """-32601 names the method, -32602 the params; -32603 keeps the exception text at home; the channel lives on."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        with pytest.raises(UnknownMethodError) as unknown:
            await client.other.does_not_exist()
        assert unknown.value.code == -32601 and "does_not_exist" in unknown.value.message
        with pytest.raises(RpcInvalidParamsError) as missing:
            await client.other.add(a=1)
        assert missing.value.code == -32602
        with pytest.raises(RpcInvalidParamsError):
            await client.other.add(1, 2, 3)
        with pytest.raises(RpcInternalError) as internal:
            await client.other.fail()
        assert internal.value.code == -32603
        assert (internal.value.message, internal.value.data) == ("Internal error", None)
        assert (await client.other.add(a=2, b=2)).result == 4


async def test_debug_mode_tells_the_caller_what_failed(speedups: Any) -> None:
    """With ``debug_mode`` the -32603 answer carries the exception text and type (never by default)."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups, debug_mode=True) as (
        _server,
        client,
    ):
        with pytest.raises(RpcInternalError) as internal:
            await client.other.fail()
        assert internal.value.message == "Internal error: secret detail"
        assert internal.value.data == {"type": "ValueError", "method": "fail"}


async def test_a_failed_nested_call_is_the_method_s_own_internal_error(speedups: Any) -> None:
    """A -32601 from an inner call must not read as "the method you called does not exist"."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        with pytest.raises(RpcInternalError) as internal:
            await client.other.call_client(method="no_such_method")
        assert "a nested call failed" in internal.value.message
        assert internal.value.data["code"] == -32601


# ---------------------------------------------------------------- typed params, discovery


async def test_typed_params_are_converted_named_and_positional(speedups: Any) -> None:
    """Hints are the schema: JSON objects arrive as the structs, dataclasses and models declared."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        items = [{"name": "a", "price": 1.5}, {"name": "b", "price": 2}]
        assert (await client.other.total(items=items)).result == 3.5
        assert (await client.other.total(items, 0.5)).result == 3.0
        assert (await client.other.where(address={"city": "Paris"})).result == "Paris"
        assert (await client.other.greet_user(user={"name": "ada", "tags": []})).result == "hi ada"


async def test_a_type_mismatch_names_the_parameter_and_the_path(speedups: Any) -> None:
    """-32602 with ``data`` saying which param and where in it, so a caller can fix the call."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        items: Any = [{"name": str(i), "price": 1} for i in range(3)] + [{"name": "x", "price": "free"}]
        with pytest.raises(RpcInvalidParamsError) as bad:
            await client.other.total(items=items)
        assert bad.value.code == -32602
        assert bad.value.data == {
            "param": "items",
            "path": "$.items[3].price",
            "message": "Expected `float`, got `str`",
        }
        assert "$.items[3].price: Expected `float`, got `str`" in bad.value.message
        with pytest.raises(RpcInvalidParamsError) as positional:
            await client.other.make_point("one", 2)
        assert positional.value.data["path"] == "$.x" and positional.value.data["param"] == "x"
        with pytest.raises(RpcInvalidParamsError, match="missing required field `y`"):
            await client.other.make_point(x=1)
        with pytest.raises(RpcInvalidParamsError, match="unknown field `z`"):
            await client.other.make_point(x=1, y=2, z=3)
        with pytest.raises(RpcInvalidParamsError) as model:
            await client.other.greet_user(user={"name": "ada", "tags": "not-a-list"})
        assert model.value.data["param"] == "user" and model.value.data["path"].startswith("$.user.tags")


class Scalars(RpcMethodsBase):
    async def kinds(self, x: float, n: int, flag: bool, name: str, anything: Any = None) -> Any:
        return [type(v).__name__ for v in (x, n, flag, name, anything)]


async def test_plain_scalar_params_keep_msgspec_s_rules(speedups: Any) -> None:
    """Scalars of exactly the hinted type skip the conversion; anything else gets the same answer as before."""
    async with channel_pair(Scalars(), ObservedClient(), speedups=speedups) as (_server, client):
        expected = ["float", "int", "bool", "str", "NoneType"]
        assert (await client.other.kinds(x=1.5, n=2, flag=True, name="a", anything=None)).result == expected
        assert (await client.other.kinds(1.5, 2, True, "a", None)).result == expected
        # An int for a float is converted; the default is filled in.
        assert (await client.other.kinds(x=1, n=2, flag=False, name="a")).result == expected
        assert (await client.other.kinds(1, 2, False, "a")).result == expected
        assert (await client.other.kinds(x=1.5, n=2, flag=True, name="a", anything=[1])).result[4] == "list"
        for bad in ({"n": True}, {"flag": 1}, {"name": 1}, {"x": "1"}):
            params: Dict[str, Any] = {"x": 1.5, "n": 2, "flag": True, "name": "a", **bad}
            with pytest.raises(RpcInvalidParamsError) as wrong:
                await client.other.kinds(**params)
            assert wrong.value.data["param"] == next(iter(bad))
        with pytest.raises(RpcInvalidParamsError) as positional:
            await client.other.kinds(1.5, True, True, "a", None)
        assert positional.value.data["param"] == "n"
        with pytest.raises(RpcInvalidParamsError, match="unknown field `z`"):
            await client.other.kinds(x=1.5, n=2, flag=True, name="a", z=3)


async def test_result_type_converts_on_the_calling_side(speedups: Any) -> None:
    """``result_type=`` gives the caller a typed result, not a dict."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        assert (await client.other.make_point(x=1, y=2, result_type=Point)).result == Point(1, 2)
        user = (await client.other.user(result_type=User)).result
        assert isinstance(user, User) and user.tags == ["x", "y"]
        assert (await client.other.make_point(1, 2, result_type=Point)).result == Point(1, 2)


async def test_discovery_answers_an_openrpc_document(speedups: Any) -> None:
    """``rpc.discover`` lists the public methods with their params, docs and schemas."""
    async with channel_pair(ServerMethods(), ObservedClient(), speedups=speedups) as (server, client):
        doc: Dict[str, Any] = (await client.call("rpc.discover")).result
        assert (await server.call("rpc.discover")).result["info"]["title"] == "ObservedClient"  # both sides answer
    assert doc["openrpc"].startswith("1.") and doc["info"]["title"] == "ServerMethods"
    listed = {m["name"]: m for m in doc["methods"]}
    assert "_private" not in listed and "add" in listed
    total = listed["total"]
    assert total["summary"] == "Sum of the prices."
    assert [(p["name"], p["required"]) for p in total["params"]] == [("items", True), ("discount", False)]
    assert total["params"][0]["schema"]["type"] == "array"
    assert total["result"]["schema"] == {"type": "number"}


async def test_discovery_can_be_switched_off(speedups: Any) -> None:
    """``discovery=False``: ``rpc.discover`` is an unknown method like any other."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups, discovery=False) as (
        _server,
        client,
    ):
        with pytest.raises(UnknownMethodError):
            await client.call("rpc.discover")


# ---------------------------------------------------------------- timeouts, cancellation


async def test_a_timed_out_call_is_an_asyncio_timeout_and_leaves_nothing_pending(speedups: Any) -> None:
    """RpcTimeoutError is an ``asyncio.TimeoutError``; ``default_response_timeout`` applies, ``None`` waits."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups, default_response_timeout=0.01) as (
        server,
        client,
    ):
        with pytest.raises(RpcTimeoutError):
            await client.other.hang(key="default")
        with pytest.raises(asyncio.TimeoutError):
            await client.call("hang", {"key": "explicit"}, timeout=0.01)
        assert client.pending_count == 0
        assert (await client.call("add", [1, 1], timeout=None)).result == 2
        await settled(server, client)


async def test_a_method_that_sends_no_response_leaves_the_call_to_its_timeout(speedups: Any) -> None:
    """``NoResponse`` means no answer at all: the caller's timeout is what ends the call."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        with pytest.raises(RpcTimeoutError):
            await client.call("silent", timeout=0.01)
        await settled(server, client)
        assert sent(server) == 0


def sides(direction: str, server: RpcChannel, client: RpcChannel) -> Tuple[RpcChannel, RpcChannel]:
    return (client, server) if direction == "client-calls" else (server, client)


@pytest.mark.parametrize("direction", ["client-calls", "server-calls"])
@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_giving_up_on_a_call_cancels_the_remote_handler(direction: str, how: str, speedups: Any) -> None:
    """A timeout or a cancelled caller sends ``$/cancelRequest``: the handler sees CancelledError, nothing stays."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        caller, callee = sides(direction, server, client)
        if how == "timeout":
            with pytest.raises(RpcTimeoutError):
                await caller.call("hang", {"key": "k"}, timeout=0.01)
        else:
            task = asyncio.ensure_future(caller.call("hang", {"key": "k"}))
            await until(lambda: methods(callee).started == ["k"])
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await until(lambda: methods(callee).cancelled == ["k"])
        await settled(server, client)
        assert methods(callee).started == ["k"] and not callee._runner.by_id
        # The connection is still open: the handler was stopped by the cancel request, not by a close.
        assert (await caller.call("echo", {"text": "still here"})).result == "still here"


async def give_up_on_a_batch(caller: RpcChannel, callee: RpcChannel, how: str) -> None:
    """Send a batch the callee cannot answer (two items hang), then give up on it by ``how``."""
    batch = [("hang", {"key": "a"}), ("echo", {"text": "x"}), ("hang", {"key": "b"})]
    if how == "timeout":
        with pytest.raises(RpcTimeoutError):
            await caller.call_batch(batch, timeout=0.01)
    else:
        task = asyncio.ensure_future(caller.call_batch(batch))
        await until(lambda: sorted(methods(callee).started) == ["a", "b"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("direction", ["client-calls", "server-calls"])
@pytest.mark.parametrize(
    "how",
    ["timeout", "cancel"],
)
async def test_giving_up_on_a_batch_tells_the_other_side(direction: str, how: str, speedups: Any) -> None:
    """``call_batch`` gives up the way ``call`` does: nothing left pending, one ``$/cancelRequest`` per item."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        caller, callee = sides(direction, server, client)
        await give_up_on_a_batch(caller, callee, how)
        assert caller.pending_count == 0
        # The batch, then a cancel for each of its three unanswered calls.
        await until(lambda: sent(caller) == 1 + 3, turns=10_000)
        assert (await caller.call("echo", {"text": "still here"})).result == "still here"


@pytest.mark.parametrize("direction", ["client-calls", "server-calls"])
@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_giving_up_on_a_batch_cancels_its_handlers(direction: str, how: str, speedups: Any) -> None:
    """The items' handlers must see CancelledError, as a single call's does, and free their budget."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        caller, callee = sides(direction, server, client)
        await give_up_on_a_batch(caller, callee, how)
        # A cancel crosses a memory pair in a few dozen loop turns; 10,000 is plenty.
        await until(lambda: sorted(methods(callee).cancelled) == ["a", "b"], turns=10_000)
        await settled(server, client)


# ---------------------------------------------------------------- the promise store (fastapi-ws-rpc)


async def test_call_me_back_then_get_response(speedups: Any) -> None:
    """fastapi-ws-rpc's round trip: the server calls us without waiting; we collect the answer once."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        call_id = (await client.other.call_me_back(method_name="note", args={"text": "hi"})).result
        assert isinstance(call_id, str) and call_id
        answer = (await client.other.get_response(call_id=call_id)).result
        assert answer == {"jsonrpc": "2.0", "id": answer["id"], "result": None}
        assert str(answer["id"]) == call_id
        assert methods(client).notes == ["hi"]  # answered only once the note ran
        assert (await client.other.get_response(call_id=call_id)).result is None  # collected: gone
        assert server.get_saved_promise(call_id) is None
        await settled(server, client)


async def test_async_call_keeps_the_answer_until_collected(speedups: Any) -> None:
    """``async_call`` returns a promise at once; the answer (result or error) is kept by id until cleared."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        promise = client.async_call("add", {"a": 1, "b": 2})
        assert isinstance(promise, RpcPromise) and not promise.done()
        assert client.get_saved_response(promise.call_id) is None  # not arrived yet
        assert (await promise.wait()).result == 3
        assert promise.done() and client.get_saved_promise(promise.call_id) is promise
        saved = client.get_saved_response(promise.call_id)
        assert saved is not None and saved.result == 3
        client.clear_saved_call(promise.call_id)
        assert client.get_saved_response(promise.call_id) is None
        mine = client.async_call("add", [2, 2], call_id="mine")
        assert mine.call_id == "mine" and (await mine.wait()).result == 4
        failed = await client.async_call("no_such_method").wait()  # an error is an answer too: kept, not raised
        assert failed.error is not None and failed.error.code == -32601
        await settled(server, client)


async def test_a_promise_fails_when_the_channel_closes(speedups: Any) -> None:
    """An answer that can no longer come fails the promise rather than leaving it waiting."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        promise = client.async_call("hang", {"key": "p"})
        await until(lambda: methods(server).started == ["p"])
        await client.close()
        with pytest.raises(RpcChannelClosedError):
            await promise.wait()
        assert client.get_saved_promise(promise.call_id) is None


async def test_calls_after_close_say_what_to_do(speedups: Any) -> None:
    """A closed channel refuses every kind of call with RpcNotConnectedError, which says to reconnect."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (_server, client):
        await client.close()
        with pytest.raises(RpcNotConnectedError) as closed:
            await client.other.add(a=1, b=2)
        assert isinstance(closed.value, RpcChannelClosedError) and isinstance(closed.value, RpcInvalidStateError)
        assert "reconnect" in str(closed.value)
        with pytest.raises(RpcNotConnectedError):
            await client.notify("note", {"text": "late"})
        with pytest.raises(RpcNotConnectedError):
            await client.call_batch([("add", [1, 2])])
        with pytest.raises(RpcNotConnectedError):
            client.async_call("add", [1, 2])
        with pytest.raises(RpcNotConnectedError):
            await client.send_raw({"jsonrpc": "2.0", "method": "note", "params": ["raw"]})


async def test_send_raw_sends_a_hand_built_message(speedups: Any) -> None:
    """fastapi-ws-rpc's ``send_raw``: whatever dict is given goes out as one frame."""
    async with channel_pair(ObservedServer(), ObservedClient(), speedups=speedups) as (server, client):
        await client.send_raw({"jsonrpc": "2.0", "method": "note", "params": {"text": "raw"}})
        await until(lambda: methods(server).notes == ["raw"])
