"""Both twins on large frames, cut anywhere: the same events and errors (the compiled twin's growth path).

The compiled twin reads a frame not all in hand straight into its payload,
reserving up to 2 MiB at once and growing past that: frames of up to 5 MiB,
text and binary, fragmented, masked or not, some with a bad byte or a ping in
between, cut into random chunks. The rounds are ``benchmarks/bigmsg/check_twins.py``'s
(which runs many more by hand); a fixed seed keeps this one the same every run.
"""

from __future__ import annotations

import importlib.util
import os
import random
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rounds() -> Any:
    spec = importlib.util.spec_from_file_location("check_twins", os.path.join(ROOT, "benchmarks/bigmsg/check_twins.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", range(4))
def test_the_twins_agree_on_large_frames_cut_anywhere(compiled: Any, seed: int) -> None:
    check = _rounds()
    rng = random.Random(seed)
    for _ in range(25):
        check.one(rng)
