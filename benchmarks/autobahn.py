"""Autobahn|Testsuite by hand: kosoku against the native server and client, with the HTML reports.

``tests/test_autobahn.py`` runs the same in the suite (strict, both directions,
both twins). This script is for a look at the reports, a case or a group at a
time, or a run one case at a time (``--concurrency 1``: the timings of the 9.*
performance cases then mean something)::

    python benchmarks/autobahn.py                      # both directions, the compiled twin
    python benchmarks/autobahn.py --twin python -c '6.4.*' --outdir /tmp/ab
    python benchmarks/autobahn.py --direction client --concurrency 1 -c '9.*'
    python benchmarks/autobahn.py -c '12.*' -c '13.*'  # permessage-deflate only

Every case runs by default, 12.* and 13.* (permessage-deflate) in full, which the
suite plays a subset of (``tests/test_autobahn.py``: why, and the compression
settings of the echo peers). ``-x`` leaves cases out.
Reports (``index.html`` and one page per case) go to ``--outdir``/server and
``--outdir``/client. The exit status is 1 when a case is not strictly OK.
Needs kosoku (Python 3.10+).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path
from typing import Any, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.autobahn_echo import echo_server, run_echo_client
from tests.test_autobahn import CLIENT_COMPRESSION, SERVER_COMPRESSION, _verdicts, _write_reports


async def server_side(impl: Any, args: argparse.Namespace) -> List[Any]:
    import kosoku

    async with echo_server(impl, SERVER_COMPRESSION) as port:
        try:
            results: List[Any] = await kosoku.run_fuzzingclient(
                f"ws://127.0.0.1:{port}", args.cases, args.exclude, concurrency=args.concurrency
            )
        except kosoku.FailureError as failure:
            results = failure.results
    return results


async def client_side(impl: Any, args: argparse.Namespace) -> List[Any]:
    import kosoku

    async with kosoku.run_fuzzingserver(args.cases, args.exclude, host="127.0.0.1", port=0) as fuzzer:
        await run_echo_client(
            fuzzer.address, fuzzer.port, impl, concurrency=args.concurrency, compression=CLIENT_COMPRESSION
        )
        try:
            results: List[Any] = await fuzzer.get_result()
        except kosoku.FailureError as failure:
            results = failure.results
    return results


async def main(args: argparse.Namespace) -> int:
    impl = importlib.import_module("fastwsrpc._speedups" if args.twin == "cython" else "fastwsrpc._speedups_py")
    failed = False
    for direction in ("server", "client") if args.direction == "both" else (args.direction,):
        started = time.perf_counter()
        results = await (server_side if direction == "server" else client_side)(impl, args)
        elapsed = time.perf_counter() - started
        where = Path(args.outdir) / direction
        _write_reports(results, where)
        counts, bad = _verdicts(results)
        print(f"{direction} ({args.twin}): {len(results)} cases in {elapsed:.1f} s: {counts}; reports in {where}")
        for line in bad:
            print("  ", line)
        slowest = sorted(results, key=lambda r: -r.duration)[:5]
        print("   slowest:", ", ".join(f"{r.case_id} {r.duration} ms" for r in slowest))
        failed = failed or bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--direction", choices=["server", "client", "both"], default="both")
    parser.add_argument("--twin", choices=["cython", "python"], default="cython")
    parser.add_argument("-c", "--cases", action="append", help="case id or glob (repeatable); default: all")
    parser.add_argument("-x", "--exclude", action="append", help="case id or glob to leave out (default: none)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--outdir", default="reports/autobahn")
    options = parser.parse_args()
    if options.exclude is None:
        options.exclude = []
    sys.exit(asyncio.run(main(options)))
