"""``python -m fastwsrpc``: the command-line client (see ``fastwsrpc.cli``)."""

import sys

from .cli import main

sys.exit(main())
