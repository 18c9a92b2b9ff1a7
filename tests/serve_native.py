"""Serves the test app on the native server in a process of its own (``tests.serve_app``'s twin).

``--fd N`` serves on a socket the parent bound and passed down (see
``ServerProcess``); ``--ready-fd N`` is a pipe on which the process writes
``ready`` once it serves; ``--port N`` binds the port itself.
"""

import argparse
import asyncio
import os
import socket

from tests.app import make_native


async def main(args: argparse.Namespace) -> None:
    server = make_native()
    where = {"sock": socket.socket(fileno=args.fd)} if args.fd is not None else {"port": args.port}
    async with server.listen(**where):
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)
        await asyncio.get_running_loop().create_future()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--port", type=int)
    group.add_argument("--fd", type=int)
    parser.add_argument("--ready-fd", type=int)
    asyncio.run(main(parser.parse_args()))
