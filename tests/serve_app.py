"""Serves the test app in a process of its own.

``python -m tests.serve_app --port N`` binds the port itself; ``--fd N`` serves
on a socket the parent bound and passed down (see ``ServerProcess``), and
``--ready-fd N`` is a pipe on which the process writes ``ready`` once it serves.
"""

import argparse
import os
import socket
from typing import List, Optional

import uvicorn

from tests.app import make_app


class _Server(uvicorn.Server):
    """Says ``ready`` on a pipe once started, so the parent need not poll the port."""

    def __init__(self, config: uvicorn.Config, ready_fd: Optional[int]) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd

    async def startup(self, sockets: Optional[List[socket.socket]] = None) -> None:
        await super().startup(sockets=sockets)
        if self.ready_fd is not None and self.started:
            os.write(self.ready_fd, b"ready\n")
            os.close(self.ready_fd)
            self.ready_fd = None


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--fd", type=int)
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args()
    config = uvicorn.Config(make_app(), host="127.0.0.1", port=args.port or 0, log_level="warning", lifespan="off")
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    _Server(config, args.ready_fd).run(sockets=sockets)
