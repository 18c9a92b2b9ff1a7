"""compare.py's figures for two copies of the code, interleaved: the ratios before and after a change.

    python benchmarks/bigmsg/ab.py BASE_DIR [--rounds 6] [--figures echo_1mib_MB_s ...] [--only NAME ...]

BASE_DIR is a copy of the repository at the base (with its own compiled
``_speedups``, and a ``benchmarks/compare.py`` that knows ``--figures``). Each
round runs compare.py once for the base and once for this tree (ABBA order),
one round of the contenders each; per round and per pair of compare.py
(``native[cython]`` / ``floor-picows``, ``fastwsrpc[cython]`` / ``raw``),
the ratio in each tree, then the median over the rounds with the lowest and
highest. The floors run in both trees, so each tree's ratio is against a
floor measured seconds before or after it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAIRS = [("native[cython]", "floor-picows"), ("fastwsrpc[cython]", "raw"), ("native[python]", "floor-picows")]


def run(tree: str, only: List[str], figures: List[str]) -> Dict[str, Any]:
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.join(tree, "benchmarks", "compare.py"), "--rounds", "1", "--json", out]
    cmd += ["--only", *only, "--figures", *figures]
    subprocess.run(cmd, cwd=tree, check=True, timeout=1800, capture_output=True)
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    return dict(data["rounds"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--figures", nargs="*", default=["echo_1mib_MB_s"])
    parser.add_argument("--only", nargs="*", default=["floor-picows", "native[cython]", "raw", "fastwsrpc[cython]"])
    args = parser.parse_args()
    trees = {"base": os.path.abspath(args.base), "new": ROOT}
    results: Dict[str, List[Dict[str, Any]]] = {"base": [], "new": []}
    for i in range(max(1, args.rounds)):
        order = ["base", "new"] if i % 2 == 0 else ["new", "base"]
        for name in order:
            results[name].append(run(trees[name], args.only, args.figures))
        print(f"round {i + 1}: " + json.dumps({k: v[-1] for k, v in results.items()}), flush=True)
    for figure in args.figures:
        print(f"\n{figure}")
        for name in ("base", "new"):
            for c in args.only:
                values = [r[c][figure] for r in results[name] if c in r and figure in r[c]]
                if values:
                    print(f"  {name:4} {c:20} median {statistics.median(values):10,.1f}")
        for mine, other in PAIRS:
            for name in ("base", "new"):
                ratios = [
                    r[mine][figure] / r[other][figure]
                    for r in results[name]
                    if mine in r and other in r and r[mine].get(figure) and r[other].get(figure)
                ]
                if ratios:
                    print(
                        f"  {name:4} {mine} / {other}: {statistics.median(ratios):.2f}x "
                        f"[{min(ratios):.2f}-{max(ratios):.2f}] over {len(ratios)} rounds"
                    )


if __name__ == "__main__":
    main()
