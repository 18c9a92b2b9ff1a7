"""Picks the twin of the hot path at import, as yarl's ``_quoting.py`` does.

* ``FASTWSRPC_NO_EXTENSIONS=1`` (any non-empty value): always the pure twin.
* Not CPython, or the extension was not built: the pure twin, silently.
* ``FASTWSRPC_REQUIRE_EXTENSIONS=1``: the compiled twin or an ImportError, so
  that CI and wheel tests cannot pass by quietly testing the pure half twice.

Type checkers only ever see the pure twin (the ``TYPE_CHECKING`` branch), so
``decode`` and the rest keep their real signatures instead of decaying to
``Any`` through a module chosen at run time; ``tests/test_stubs.py`` holds the
compiled twin to the same signatures.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from . import _speedups_py

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "REQUIRE_EXTENSIONS",
    "PendingTable",
    "check_size",
    "classify",
    "decode",
    "impl",
]

NO_EXTENSIONS = bool(os.environ.get("FASTWSRPC_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS = bool(os.environ.get("FASTWSRPC_REQUIRE_EXTENSIONS"))

if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    raise ImportError("FASTWSRPC_NO_EXTENSIONS and FASTWSRPC_REQUIRE_EXTENSIONS are both set")

impl = _speedups_py
IMPLEMENTATION = "python"

if TYPE_CHECKING:
    from ._speedups_py import DEFAULT_MAX_DEPTH, PendingTable, check_size, classify, decode
else:
    if not NO_EXTENSIONS and platform.python_implementation() == "CPython":
        try:
            from . import _speedups as _compiled
        except ImportError:
            if REQUIRE_EXTENSIONS:
                raise
        else:
            impl = _compiled
            IMPLEMENTATION = "cython"
    elif REQUIRE_EXTENSIONS:
        raise ImportError("FASTWSRPC_REQUIRE_EXTENSIONS is set but this is not CPython")

    decode = impl.decode
    classify = impl.classify
    check_size = impl.check_size
    PendingTable = impl.PendingTable
    DEFAULT_MAX_DEPTH = impl.DEFAULT_MAX_DEPTH
