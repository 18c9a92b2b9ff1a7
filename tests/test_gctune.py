"""The garbage collector's pace (fastwsrpc/gctune.py): what ``fastwsrpc serve`` sets, and how to leave it."""

from __future__ import annotations

import gc
from typing import Iterator

import pytest

from fastwsrpc.cli import build_parser
from fastwsrpc.gctune import GC_THRESHOLD, tune_gc


@pytest.fixture
def restored() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_tune_gc_sets_the_young_threshold_and_keeps_the_older_ones(restored: None) -> None:
    gc.set_threshold(700, 11, 12)
    tune_gc()
    assert gc.get_threshold() == (GC_THRESHOLD, 11, 12)
    tune_gc(1234)
    assert gc.get_threshold() == (1234, 11, 12)


def test_zero_leaves_pythons_setting(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(0)
    tune_gc(-5)
    assert gc.get_threshold() == (700, 10, 10)


def test_serve_tunes_by_default_and_takes_zero_to_leave_it() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "app:Methods"]).gc_threshold == GC_THRESHOLD
    assert parser.parse_args(["serve", "app:Methods", "--gc-threshold", "0"]).gc_threshold == 0
