"""The fastwsrpc command, run as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

from .support import ServerThread, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastwsrpc", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_call_named_positional_and_json_params(server: ServerThread) -> None:
    url = server.url()
    done = cli("call", url, "add", "a=1", "b=2")
    assert (done.returncode, done.stdout.strip()) == (0, "3")
    done = cli("call", url, "subtract", "42", "23")
    assert (done.returncode, json.loads(done.stdout)) == (0, 19)
    done = cli("call", url, "concat", "a=hello", 'b=" world"')
    assert json.loads(done.stdout) == "hello world"
    done = cli("call", url, "total", "--params", '{"items": [{"name": "a", "price": 2.5}]}')
    assert json.loads(done.stdout) == 2.5
    assert cli("call", url, "record", "key=cli", "value=1", "--notify").returncode == 0


def test_remote_error_exits_1_with_the_error_on_stderr(server: ServerThread) -> None:
    done = cli("call", server.url(), "no_such_method")
    assert done.returncode == 1 and done.stdout == ""
    assert json.loads(done.stderr)["code"] == -32601
    bad = cli("call", server.url(), "make_point", "x=one", "y=2")
    assert bad.returncode == 1 and json.loads(bad.stderr)["data"]["path"] == "$.x"


def test_usage_and_connection_errors() -> None:
    assert cli("call", "ws://127.0.0.1:1/ws", "add", "a=1", "2").returncode == 2
    refused = cli("call", f"ws://127.0.0.1:{free_port()}/ws", "add")
    assert refused.returncode == 3 and "fastwsrpc:" in refused.stderr
    for args in (["--help"], ["call", "--help"], ["methods", "--help"], ["serve", "--help"]):
        done = cli(*args)
        assert done.returncode == 0 and "usage: fastwsrpc" in done.stdout


def test_methods_lists_what_the_server_exposes(server: ServerThread) -> None:
    done = cli("methods", server.url())
    assert done.returncode == 0
    lines: List[str] = done.stdout.splitlines()
    assert "add(a, b)" in lines and any(line.startswith("total(items, discount?)  - Sum") for line in lines)
    doc = json.loads(cli("methods", server.url(), "--json").stdout)
    assert doc["openrpc"].startswith("1.")


def test_serve_a_methods_class_then_call_it() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastwsrpc",
            "serve",
            "tests.app:ServerMethods",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "serving tests.app:ServerMethods" in proc.stdout.readline()
        url = f"ws://127.0.0.1:{port}/ws"
        for _ in range(100):  # bounded wait for the port
            done = cli("call", url, "add", "a=20", "b=22")
            if done.returncode != 3:
                break
        assert (done.returncode, done.stdout.strip()) == (0, "42")
    finally:
        proc.terminate()
        proc.wait(10)
    assert cli("serve", "tests.app:NoSuchThing").returncode == 2
