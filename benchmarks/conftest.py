from __future__ import annotations

import importlib
from typing import Any

import pytest

from fastwsrpc import _speedups_py

try:
    _compiled: Any = importlib.import_module("fastwsrpc._speedups")
except ImportError:  # pragma: no cover
    _compiled = None


@pytest.fixture(params=["py", "cython"])
def impl(request: Any) -> Any:
    """Each twin of the hot path, measured side by side in the same run."""
    if request.param == "py":
        return _speedups_py
    if _compiled is None:
        pytest.skip("compiled speedups not built")
    return _compiled
