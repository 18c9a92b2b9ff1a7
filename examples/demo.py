"""`make demo`: start the bidirectional server on a free loopback port, run the client, stop.

The server runs in its own process, as it would in real life.
"""

import asyncio
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bidirectional_client  # noqa: E402

import fastwsrpc  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("demo server exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("demo server did not start")


def main() -> None:
    port = free_port()
    print(f"fastwsrpc {fastwsrpc.__version__} ({fastwsrpc.IMPLEMENTATION} hot path)")
    print(f"starting demo server on ws://127.0.0.1:{port}/ws")
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "bidirectional_server.py"), "--port", str(port)])
    try:
        wait_for_port(port, server)
        asyncio.run(bidirectional_client.main(f"ws://127.0.0.1:{port}/ws"))
        time.sleep(0.2)  # let the server's last print land before we stop it
        print("demo finished: calls went client -> server and server -> client")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
