"""``python -m fastwsrpc``: the command-line client (see ``fastwsrpc.cli``).

``python -m fastwsrpc --version`` works even where the ``fastwsrpc`` script is
not on ``PATH`` (a venv not activated), which is when a user needs it most.
"""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
