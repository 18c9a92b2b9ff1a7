"""fastwsrpc.js under Node's own test runner (``node --test tests/js/``), against a real fastwsrpc server.

The server is the browser example's app (``examples/browser/app.py``) on a real
127.0.0.1 port; its URL goes to the JavaScript tests in ``FASTWSRPC_URL``. Node
20 has no global WebSocket, so the tests pass the ``ws`` package's class, from
``tests/js/node_modules`` (``npm ci`` in ``tests/js``). The Node tests do the
client's logic in detail (``client.test.mjs`` against this server,
``peer.test.mjs`` against a scripted peer for reconnects and odd frames); this
test only runs them and asserts they all passed. ``durable.test.mjs`` (sessions,
idempotent calls, topic recovery) drives a second server,
``tests/durable_js_app.py``, whose URL goes in ``FASTWSRPC_DURABLE_URL``.

Without ``node`` (or without ``npm ci``) this skips with a message; with
``FASTWSRPC_REQUIRE_BROWSER=1`` (CI) it fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import cast

import pytest
from fastapi import FastAPI

from .durable_js_app import DurableServer
from .support import ServerThread

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = ROOT / "tests" / "js"
EXAMPLE = ROOT / "examples" / "browser" / "app.py"
REQUIRE = os.environ.get("FASTWSRPC_REQUIRE_BROWSER") == "1"
#: The whole Node run gets this long (pytest's own limit per test is 120 s).
NODE_TIMEOUT = 100


def need(message: str) -> None:
    message += " (with FASTWSRPC_REQUIRE_BROWSER=1 this is a failure, not a skip)"
    if REQUIRE:
        pytest.fail(message)
    pytest.skip(message)


def example_app() -> FastAPI:
    """``examples/browser/app.py``'s app (examples are not a package: loaded from the file)."""
    spec = importlib.util.spec_from_file_location("fastwsrpc_browser_example_for_node", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(FastAPI, module.make_app())


def test_the_client_passes_nodes_own_tests() -> None:
    node = shutil.which("node")
    if node is None:
        need("node is not installed: apt-get install nodejs npm, then npm ci in tests/js")
    version = subprocess.run([cast(str, node), "--version"], capture_output=True, text=True, check=True).stdout
    if int(version.lstrip("v").split(".")[0]) < 18:
        need(f"node {version.strip()} has no test runner: Node 18 or later is needed")
    if not (JS_TESTS / "node_modules" / "ws").is_dir():
        need("the ws package is not installed: npm ci in tests/js")
    files = sorted(str(path.relative_to(JS_TESTS)) for path in JS_TESTS.glob("*.test.mjs"))
    assert files, "no tests/js/*.test.mjs"

    with ServerThread(example_app()) as server, DurableServer() as durable:
        # The files are named (not the folder): Node 18/20 and 22 read a folder argument differently.
        run = subprocess.run(
            [cast(str, node), "--test", "--test-reporter=tap", *files],
            cwd=JS_TESTS,
            env={**os.environ, "FASTWSRPC_URL": server.url("/ws"), "FASTWSRPC_DURABLE_URL": durable.url("/ws")},
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    counts = {
        name: int(n) for name, n in re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", output, re.M)
    }
    assert counts.get("tests", 0) > 0 and counts["pass"] == counts["tests"], output
