"""Reads pytest-benchmark JSON files: the run-to-run spread, and a baseline against a later run.

    python benchmarks/gate.py spread RUN.json RUN.json ...  [--markdown]
    python benchmarks/gate.py table BASELINE.json CURRENT.json [--stat min] [--fail 25]
    python benchmarks/gate.py confirm -- PYTEST COMMAND LINE WITH --benchmark-compare-fail ...

``spread``: for each benchmark, how far its ``min`` and its ``median`` moved
over the runs given (same code, run after run): the slowest run's figure over
the fastest's, minus one. The gate's threshold must be above what a benchmark
does on unchanged code, or the gate fails for nothing (docs/guide/benchmarks.md
has this machine's figures).

``table``: the comparison as a Markdown table (for a CI job's summary): each
benchmark's ``--stat`` in both runs and the change; ``--fail`` marks the rows
past that many percent. The gate's verdict is pytest-benchmark's own
(``--benchmark-compare-fail``); this only shows the figures.

``confirm``: the gate, made robust to a noisy machine. It runs the pytest
command given; if benchmarks fail the comparison, it runs the same command
again for those benchmarks only (``-k``), and fails only for the ones that
fail both times. A real slowdown fails every run; a machine that was busy for
a few seconds fails one run in a few, and rarely the same benchmark twice (on
this machine, two gates on unchanged code failed on different benchmarks).
It exits with pytest's status for a failure, 0 otherwise, naming what failed.

The JSON files are those of ``--benchmark-json=PATH``, or the ones
``--benchmark-save=NAME`` writes under ``.benchmarks/<machine>/``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

STATS = ("min", "median")


def load(path: str) -> Dict[str, Dict[str, float]]:
    """``{benchmark's name: its stats}`` of one run (times in seconds)."""
    with open(path) as f:
        data = json.load(f)
    return {bench["name"]: bench["stats"] for bench in data["benchmarks"]}


def spread(runs: Sequence[Dict[str, Dict[str, float]]]) -> List[Tuple[str, int, Dict[str, Tuple[float, float]]]]:
    """Per benchmark: (name, runs it is in, {stat: (lowest, highest)})."""
    names = sorted({name for run in runs for name in run})
    rows = []
    for name in names:
        seen = [run[name] for run in runs if name in run]
        rows.append(
            (name, len(seen), {stat: (min(s[stat] for s in seen), max(s[stat] for s in seen)) for stat in STATS})
        )
    return rows


def _pct(low: float, high: float) -> float:
    return (high / low - 1) * 100 if low else float("inf")


def _time(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f} us" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def print_spread(paths: Sequence[str], markdown: bool) -> None:
    rows = spread([load(p) for p in paths])
    if markdown:
        print("| benchmark | runs | min, fastest run | min: spread | median: spread |")
        print("|---|---|---|---|---|")
    for name, count, stats in rows:
        figures = [_pct(*stats[stat]) for stat in STATS]
        if markdown:
            print(f"| `{name}` | {count} | {_time(stats['min'][0])} | {figures[0]:.1f}% | {figures[1]:.1f}% |")
        else:
            fastest = _time(stats["min"][0])
            print(f"{name:50s} {count:3d} {fastest:>14s}  min {figures[0]:6.1f}%  median {figures[1]:6.1f}%")
    for stat in STATS:
        values = sorted(_pct(*stats[stat]) for _, _, stats in rows)
        if values:
            worst = rows[[_pct(*s[stat]) for _, _, s in rows].index(values[-1])][0]
            print(
                f"\n{stat}: largest spread {values[-1]:.1f}% ({worst}); "
                f"median spread {values[len(values) // 2]:.1f}%; over {len(paths)} runs",
                file=sys.stderr if markdown else sys.stdout,
            )


def false_alarms(paths: Sequence[str], stat: str, threshold: float) -> Tuple[int, int, Dict[str, int]]:
    """Every ordered pair of runs taken as (baseline, gate): how many pairs fail at ``threshold`` percent,
    out of how many, and how often each benchmark is the one past it."""
    runs = [load(p) for p in paths]
    failed, pairs = 0, 0
    blamed: Dict[str, int] = {}
    for i, base in enumerate(runs):
        for j, now in enumerate(runs):
            if i == j:
                continue
            pairs += 1
            past = [n for n in base if n in now and _pct(base[n][stat], now[n][stat]) > threshold]
            failed += bool(past)
            for name in past:
                blamed[name] = blamed.get(name, 0) + 1
    return failed, pairs, blamed


def print_table(baseline: str, current: str, stat: str, fail: Optional[float]) -> int:
    """The comparison as Markdown; returns how many benchmarks are past ``fail`` percent."""
    before, after = load(baseline), load(current)
    past = 0
    print(f"| benchmark | baseline {stat} | this run {stat} | change |")
    print("|---|---|---|---|")
    for name in sorted(set(before) | set(after)):
        if name not in before or name not in after:
            print(f"| `{name}` | {_time(before[name][stat]) if name in before else 'n/a'} | "
                  f"{_time(after[name][stat]) if name in after else 'n/a'} | |")  # fmt: skip
            continue
        change = _pct(before[name][stat], after[name][stat])
        mark = ""
        if fail is not None and change > fail:
            mark, past = " **slower than the gate allows**", past + 1
        print(f"| `{name}` | {_time(before[name][stat])} | {_time(after[name][stat])} | {change:+.1f}%{mark} |")
    if fail is not None:
        print(f"\n{past} benchmark(s) more than {fail:g}% slower ({stat}) than the baseline.")
    return past


_FAILED = re.compile(r"^\s*(test_\S+) \(\S+\) - Field '\w+' has failed", re.M)


def _run(command: Sequence[str]) -> Tuple[int, List[str]]:
    """Run a pytest gate command, echo its output; its status and the benchmarks that failed the comparison."""
    done = subprocess.run(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    sys.stdout.write(done.stdout)
    return done.returncode, sorted(set(_FAILED.findall(done.stdout)))


def confirm(command: Sequence[str]) -> int:
    """The gate, with every benchmark that failed measured once more (see the module docstring)."""
    status, failed = _run(command)
    if status == 0 or not failed:
        return status  # passed, or failed for another reason than a comparison (then say so as pytest did)
    print(f"\n[gate] {len(failed)} benchmarks past the threshold; measuring them again: {', '.join(failed)}")
    selection = " or ".join(sorted({name.split("[", 1)[0] for name in failed}))
    # The second run writes no JSON: the first run's file stays whole (the table shows every benchmark).
    rerun = [arg for arg in command if not arg.startswith("--benchmark-json")]
    again_status, again = _run([*rerun, "-k", selection])
    confirmed = sorted(set(failed) & set(again))
    if not confirmed:
        print(f"[gate] none failed twice: passed ({len(failed)} failed once: a busy machine, not the code)")
        return 0
    print(f"[gate] FAILED: slower than the threshold twice in a row: {', '.join(confirmed)}")
    return again_status or 1


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("spread", help="run-to-run spread of min and median over runs of unchanged code")
    one.add_argument("runs", nargs="+")
    one.add_argument("--markdown", action="store_true", help="a Markdown table (the summary lines go to stderr)")
    one.add_argument("--at", type=float, nargs="*", help="thresholds (percent): how many pairs of runs would fail")
    one.add_argument("--stat", choices=STATS, default="min", help="the statistic --at judges (default min)")
    two = sub.add_parser("table", help="a baseline against a later run, as a Markdown table")
    two.add_argument("baseline")
    two.add_argument("current")
    two.add_argument("--stat", choices=STATS, default="min")
    two.add_argument("--fail", type=float, help="mark the benchmarks more than this many percent slower")
    three = sub.add_parser("confirm", help="run a gate command; fail only on benchmarks that fail twice")
    three.add_argument("pytest_args", nargs=argparse.REMAINDER, help="the pytest command line (after --)")
    args = parser.parse_args(argv)
    if args.command == "confirm":
        line = list(args.pytest_args)
        if line[:1] == ["--"]:
            line = line[1:]
        sys.exit(confirm(line))
    if args.command == "spread":
        print_spread(args.runs, args.markdown)
        for threshold in args.at or ():
            failed, pairs, blamed = false_alarms(args.runs, args.stat, threshold)
            worst = ", ".join(f"{n} ({c})" for n, c in sorted(blamed.items(), key=lambda x: -x[1])[:4])
            print(
                f"{args.stat}:{threshold:g}%: {failed} of {pairs} (baseline, gate) pairs of these runs fail"
                + (f"; most often {worst}" if worst else ""),
                file=sys.stderr if args.markdown else sys.stdout,
            )
    else:
        print_table(args.baseline, args.current, args.stat, args.fail)


if __name__ == "__main__":
    main()
