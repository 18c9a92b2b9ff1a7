"""``fastwsrpc call`` on a stream method, and ``fastwsrpc subscribe`` (issue 26, item 5).

A stream is read to its end, one JSON line per item; whether an answer opens a
stream is decided from the answer itself (``{"stream": <the request's id>}``).
The in-process tests run ``cli.main()`` against a server thread of each kind;
those about Ctrl-C and a closed pipe run the command as a process, as a user would.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from typing import Any, Iterator, List, Tuple

import pytest

from fastwsrpc import WebSocketRpcClient
from fastwsrpc.cluster import Cluster

from .cli_app import NodeMethods
from .support import SERVER_KINDS, NativeServerThread, ServerThread
from .test_cli import ROOT, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=SERVER_KINDS)
def stream_url(request: Any) -> Iterator[str]:
    """``tests.cli_app:NodeMethods`` at /ws, on the FastAPI endpoint and on the native server."""
    cluster = Cluster()
    if request.param == "fastapi":
        from fastapi import FastAPI

        from fastwsrpc import WebSocketRpcEndpoint

        app = FastAPI()
        WebSocketRpcEndpoint(NodeMethods(cluster), cluster=cluster).register_route(app, "/ws")
        server: Any = ServerThread(app)
    else:
        from fastwsrpc.server import WebSocketRpcServer

        server = NativeServerThread(WebSocketRpcServer(NodeMethods(cluster), cluster=cluster))
    with server:
        yield server.url("/ws")


def lines(out: str) -> List[Any]:
    return [json.loads(line) for line in out.splitlines()]


def cli_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastwsrpc", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    """The process's next line of output (the test's timeout bounds the wait)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the command ended before printing: {proc.communicate(timeout=10)}"
    return line


def finish(proc: subprocess.Popen[str]) -> Tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    return proc.returncode, out, err


# ---------------------------------------------------------------- call on a stream
def test_a_stream_prints_one_json_line_per_item_then_exits_0(capsys: Any, stream_url: str) -> None:
    code, out, err = run(capsys, "call", stream_url, "ticks", "n=3")
    assert (code, lines(out), err) == (0, [{"i": 0}, {"i": 1}, {"i": 2}], "")
    code, out, _ = run(capsys, "call", stream_url, "ticks", "n=0")
    assert (code, out) == (0, "")


def test_pretty_indents_each_item(capsys: Any, stream_url: str) -> None:
    code, out, _ = run(capsys, "call", stream_url, "ticks", "2", "--pretty")
    assert code == 0 and out == '{\n  "i": 0\n}\n{\n  "i": 1\n}\n'


def test_a_plain_answer_shaped_like_a_stream_is_a_plain_answer(capsys: Any, stream_url: str) -> None:
    # Only {"stream": <this request's id>} opens a stream: a method cannot give that by accident.
    code, out, _ = run(capsys, "call", stream_url, "looks_like_a_stream")
    assert (code, json.loads(out)) == (0, {"stream": 999_999})
    assert run(capsys, "call", stream_url, "add", "a=1", "b=2")[:2] == (0, "3\n")


def test_a_stream_that_fails_prints_its_items_then_the_error_and_exits_1(capsys: Any, stream_url: str) -> None:
    code, out, err = run(capsys, "call", stream_url, "broken_ticks", "n=2")
    assert (code, lines(out)) == (1, [0, 1])
    assert json.loads(err) == {"code": -32050, "message": "ran out of ticks", "data": {"after": 2}}


def test_a_stream_that_cannot_start_is_a_remote_error(capsys: Any, stream_url: str) -> None:
    code, out, err = run(capsys, "call", stream_url, "ticks", "n=x")
    assert (code, out) == (1, "") and json.loads(err)["code"] == -32602


def test_timeout_bounds_the_answer_not_the_time_between_items(capsys: Any, stream_url: str) -> None:
    code, out, _ = run(capsys, "call", stream_url, "ticks", "n=3", "every=0.3", "--timeout", "0.2")
    assert (code, lines(out)) == (0, [{"i": 0}, {"i": 1}, {"i": 2}])


def test_ctrl_c_stops_a_stream_with_exit_0(stream_url: str) -> None:
    proc = cli_process("call", stream_url, "ticks", "n=100000", "every=0.02")
    try:
        assert json.loads(read_line(proc)) == {"i": 0}
        proc.send_signal(signal.SIGINT)
        code, _, _ = finish(proc)
    finally:
        stop(proc)
    assert code == 0


def test_a_reader_that_goes_away_ends_the_stream_quietly(stream_url: str) -> None:
    proc = cli_process("call", stream_url, "ticks", "n=100000", "every=0.005")  # | head -1
    try:
        read_line(proc)
        assert proc.stdout is not None
        proc.stdout.close()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        proc.wait(30)
    finally:
        stop(proc)
    assert proc.returncode == 0 and err == ""


# ---------------------------------------------------------------- subscribe
async def publish_until(url: str, proc: subprocess.Popen[str], topic: str) -> List[Any]:
    """Publish 0, 1, 2, ... on ``topic`` until the subscriber printed its first event (it subscribes
    at a moment we cannot see), then 3 more; the events it printed."""
    events = []
    assert proc.stdout is not None
    async with WebSocketRpcClient(url, retry_config=False) as client:
        deadline = time.monotonic() + 30
        n = 0
        while not select.select([proc.stdout], [], [], 0.05)[0]:  # bounded: see the deadline
            assert time.monotonic() < deadline and proc.poll() is None, "the subscriber printed nothing"
            await client.call("emit", {"topic": topic, "data": n})
            n += 1
        events.append(json.loads(read_line(proc)))
        first = events[0]["data"]
        for n in range(first + 1, first + 4):
            await client.call("emit", {"topic": topic, "data": n})
        for _ in range(3):
            events.append(json.loads(read_line(proc)))
    return events


def stop(proc: subprocess.Popen[str]) -> None:
    """Whatever happened: the process is gone and its pipes closed."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


async def test_subscribe_prints_each_event_and_ctrl_c_exits_0(stream_url: str) -> None:
    proc = cli_process("subscribe", stream_url, "news", "other")
    try:
        events = await publish_until(stream_url, proc, "news")
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc)
    finally:
        stop(proc)
    first = events[0]["data"]
    assert events == [{"topic": "news", "data": first + n, "dropped": 0} for n in range(4)]
    assert (code, err) == (0, "")


async def test_subscribe_count_exits_0_after_n_events(stream_url: str) -> None:
    proc = cli_process("subscribe", stream_url, "ticker", "--count", "4", "--on-slow", "drop_oldest")
    try:
        events = await publish_until(stream_url, proc, "ticker")
        code, out, _ = finish(proc)
    finally:
        stop(proc)
    assert (code, out) == (0, "") and [e["topic"] for e in events] == ["ticker"] * 4


def test_subscribe_usage_errors_exit_2(capsys: Any, stream_url: str) -> None:
    for args, message in (
        (["subscribe", stream_url], "required: topic"),
        (["subscribe", stream_url, "t", "--count", "0"], "--count must be at least 1"),
        (["subscribe", stream_url, "t", "--on-slow", "never"], "invalid choice"),
        (["subscribe", "http://127.0.0.1:1/ws", "t"], "did you mean ws://"),
    ):
        code, _, err = run(capsys, *args)
        assert code == 2 and message in err, (args, err)
