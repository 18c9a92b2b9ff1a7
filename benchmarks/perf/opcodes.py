"""Where a workload's Python bytecode goes, per message and per function: the "why" behind ``measure.py ir``.

    python benchmarks/perf/opcodes.py KIND N [--top 25]

Runs workloads.py's KIND with 0 messages, then with N, under ``sys.settrace``
counting executed bytecode instructions per function; prints the difference
per message, biggest first. Deterministic, and it names Python functions
(callgrind names the interpreter's). Compiled code (the Cython twin, msgspec,
asyncio's C parts) is not traced: run it on both trees and compare.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from typing import Any, Counter

import fastwsrpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads


def counted(kind: str, n: int) -> Counter[str]:
    counts: Counter[str] = collections.Counter()

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            return trace
        if event == "opcode":
            code = frame.f_code
            counts[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
        return trace

    runs: Any = {
        "notes": lambda: workloads.fed(workloads.NOTE, n),
        "calls": lambda: workloads.fed(workloads.CALL, n),
        "inflight64": lambda: workloads.in_flight(n),
    }
    sys.settrace(trace)
    try:
        asyncio.run(runs[kind]())
    finally:
        sys.settrace(None)
    return counts


def main() -> None:
    kind, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    zero = counted(kind, 0)
    full = counted(kind, n)
    per = {k: (full[k] - zero.get(k, 0)) / n for k in full}
    print(f"{sum(per.values()):.1f} opcodes per message ({fastwsrpc.__file__})")
    for name, value in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        if value >= 0.05:
            print(f"{value:10.2f}  {name}")


if __name__ == "__main__":
    main()
