"""The garbage collector's pace, for a process that holds many connections.

CPython collects its youngest generation after every 700 net allocations of
container objects, and promotes what it finds alive. A busy server makes many
objects that live a few milliseconds (a ping's future and deadline, a call's
task, a frame's decoded message), so the frequent young collections catch them
alive and promote them. Once the objects promoted since the last full
collection reach a quarter of the old ones, the next collection walks every
tracked object in the process. A native server connection holds about 36
tracked objects idle and 70 with a subscription, so at 17,000 connections a
process holds over a million, and each full collection stalled every connection
for 0.3 to 0.5 s. With pings alone, that happened several times a minute
(``benchmarks/scale.py``, 19,000 connections in one process).

With the young generation collected every 50,000 allocations instead, such
objects die before a collection sees them. The same run had one full
collection instead of 44, and a fifth of the idle CPU (see docs/guide/scale.md,
"Garbage collection"). Memory is not the price: only garbage in reference
cycles waits longer, and it waits a few more milliseconds.

The setting is process-wide, so the library never changes it on its own. The
process's owner does: ``fastwsrpc serve`` (``--gc-threshold``; 0 leaves Python's),
or an application that serves many connections itself, by calling
:func:`tune_gc` at start.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLD", "tune_gc"]

#: Allocations between two collections of the youngest generation (Python's default: 700).
GC_THRESHOLD = 50_000


def tune_gc(threshold: int = GC_THRESHOLD) -> None:
    """Collect the youngest generation every ``threshold`` allocations; 0 (or less) leaves Python's setting.

    The older generations keep their own thresholds: they count young
    collections, which are now rarer.
    """
    if threshold > 0:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(threshold, middle, old)
