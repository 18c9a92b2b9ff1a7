"""Per-function instructions of the timed part: the long callgrind run minus the short one, over N.

    python benchmarks/bigmsg/cgdiff.py LONG.out SHORT.out N [--top 30] [--inclusive]

Reads ``callgrind_annotate``'s output of both profiles (self cost by default).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from typing import Dict

LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$")


def costs(path: str, inclusive: bool) -> Dict[str, int]:
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", path],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    table: Dict[str, int] = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m and "PROGRAM TOTALS" not in line:
            name = m.group(2)
            name = re.sub(r"^/tmp/python-build[^:]*/", "", name)
            name = re.sub(r" \[[^\]]*\]$", "", name)
            table[name] = table.get(name, 0) + int(m.group(1).replace(",", ""))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("long")
    parser.add_argument("short")
    parser.add_argument("n", type=int)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--inclusive", action="store_true")
    args = parser.parse_args()
    a, b = costs(args.long, args.inclusive), costs(args.short, args.inclusive)
    diff = {k: (a.get(k, 0) - b.get(k, 0)) / args.n for k in set(a) | set(b)}
    total = sum(diff.values()) if not args.inclusive else 0.0
    for name, value in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        share = f" {100 * value / total:5.1f}%" if total else ""
        print(f"{value:>14,.0f}{share}  {name}")
    if total:
        print(f"{total:>14,.0f}  total (self)")


if __name__ == "__main__":
    main()
