"""Repeatable figures of the hot path and of idle memory, one tree against another.

    python benchmarks/perf/measure.py ir  [--base DIR] [--head DIR] [--tree NAME=DIR ...] [--n 20000] [--only FIG ...]
    python benchmarks/perf/measure.py mem [--base DIR] [--head DIR] [--tree NAME=DIR ...] [--conns 1000] [--rounds 3]

``ir``: instructions per message (valgrind's callgrind: the same count on a busy
machine as on an idle one), ``(Ir(N) - Ir(0)) / N``, for both twins:

* ``channel-notes``, ``channel-calls``, ``channel-inflight64``: workloads.py (a
  channel on a memory pair; no sockets);
* ``native-notes``, ``native-calls``: native_server.py under callgrind, driven
  from another process by native_client.py (raw frames, calls 64 in flight);
  only the server process is counted.

``mem``: bytes per idle connection on the native server (1,000 connections
from another process): growth of the server's RSS (a run without tracemalloc)
and of what tracemalloc traces after a collection (a run with it), each the
median of ``--rounds`` rounds, base and head alternating.

A tree is a checkout with its compiled module built in place (for the base:
``git worktree add /tmp/basewt 2f44ab7`` and build it there; the editable
install of this repository would otherwise hand out this tree's ``_speedups``
to the other tree's package). Each run prints which package and module it
imported. ``--head`` defaults to this repository, ``--base`` to /tmp/basewt
(or $FASTWSRPC_PERF_BASE); ``--tree name=DIR`` adds more columns (e.g. the
commit before a change, in a worktree of its own: this working tree is shared
and may hold other people's unfinished edits). Percentages are against base.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHANNEL = ["channel-notes", "channel-calls", "channel-inflight64"]
NATIVE = ["native-notes", "native-calls"]
TWINS = {"cython": {"FASTWSRPC_REQUIRE_EXTENSIONS": "1"}, "python": {"FASTWSRPC_NO_EXTENSIONS": "1"}}


def env_for(tree: str, twin: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("FASTWSRPC_NO_EXTENSIONS", None)
    env.pop("FASTWSRPC_REQUIRE_EXTENSIONS", None)
    env.update(TWINS[twin])
    env["PYTHONPATH"] = tree
    env["PYTHONHASHSEED"] = "0"  # the same dict and set layouts in every run: the same counts
    return env


def check_import(stderr: str, tree: str) -> None:
    """The run imported the tree it was meant to, compiled module included."""
    line = next((x for x in stderr.splitlines() if x.startswith("fastwsrpc ")), "")
    if os.path.join(tree, "fastwsrpc") not in line or ("twin=cython" in line and line.count(tree) < 2):
        raise SystemExit(f"wrong import for {tree}: {line!r}\n{stderr[-2000:]}")


def callgrind(cmd: List[str], env: Dict[str, str], out: str) -> Tuple[int, str]:
    """Run ``cmd`` under callgrind; its total instruction count and its stderr."""
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    done = subprocess.run(vg + cmd, env=env, capture_output=True, text=True, timeout=3600)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"{cmd} failed:\n{done.stderr[-3000:]}")
    return int(found.group(1)), done.stderr


def run_ir(tree: str, twin: str, name: str, n: int, workdir: str) -> int:
    """Total instructions of one run of figure ``name`` with ``n`` messages."""
    env = env_for(tree, twin)
    out = os.path.join(workdir, f"cg.{tree.strip('/').replace('/', '_')}.{twin}.{name}.{n}")
    if name in CHANNEL:
        ir, err = callgrind([sys.executable, os.path.join(HERE, "workloads.py"), name[8:], str(n)], env, out)
        check_import(err, tree)
        return ir
    port_file = out + ".port"
    if os.path.exists(port_file):
        os.remove(port_file)  # a kept directory's last run: its server is gone
    server_cmd = [sys.executable, os.path.join(HERE, "native_server.py"), port_file]
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    with open(out + ".err", "w+") as err_file:
        server = subprocess.Popen(vg + server_cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
        try:
            port = wait_for_port(server, port_file, 600, f"for {tree} {twin}")
            client = [sys.executable, os.path.join(HERE, "native_client.py"), port, name[7:], str(n)]
            subprocess.run(client, check=True, timeout=3600, env=env_for(ROOT, "cython"))
            server.wait(600)
        finally:
            if server.poll() is None:
                server.kill()
        err_file.seek(0)
        err = err_file.read()
    found = re.search(r"Collected : (\d+)", err)
    if not found:
        raise SystemExit(f"no count for {tree} {twin} {name}:\n{err[-3000:]}")
    check_import(err, tree)
    return int(found.group(1))


def trees_of(args: argparse.Namespace) -> Dict[str, str]:
    trees = {"base": os.path.abspath(args.base)}
    for spec in args.tree or []:
        name, _, path = spec.partition("=")
        trees[name] = os.path.abspath(path)
    trees["head"] = os.path.abspath(args.head)
    return trees


def header(trees: Dict[str, str]) -> str:
    return f"{'figure':28}" + "".join(f"{t:>11}" for t in trees) + "".join(f"{t + ' %':>11}" for t in list(trees)[1:])


def row(name: str, values: Dict[str, float]) -> str:
    base = values["base"]
    cells = "".join(f"{v:>11,.0f}" for v in values.values())
    return f"{name:28}" + cells + "".join(f"{v / base - 1:>+11.1%}" for t, v in values.items() if t != "base")


def ir(args: argparse.Namespace) -> None:
    names = args.only or CHANNEL + NATIVE
    trees = trees_of(args)
    jobs = [(label, twin, name, n) for name in names for twin in TWINS for label in trees for n in (args.n, 0)]
    workdir = args.keep or tempfile.mkdtemp(prefix="fastwsrpc-perf-")
    os.makedirs(workdir, exist_ok=True)
    # Counts of trees that do not change (--frozen) are kept in --keep and reused.
    cache_file = os.path.join(workdir, "counts.json")
    cache: Dict[str, int] = {}
    if args.keep and os.path.exists(cache_file):
        with open(cache_file) as f:
            cache = json.load(f)
    totals: Dict[Tuple[str, str, str, int], int] = {}
    todo = []
    for job in jobs:
        key = f"{trees[job[0]]}|{job[1]}|{job[2]}|{job[3]}"
        if job[0] in args.frozen and key in cache:
            totals[job] = cache[key]
        else:
            todo.append(job)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(run_ir, trees[label], twin, name, n, workdir): (label, twin, name, n)
            for label, twin, name, n in todo
        }
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            totals[job] = future.result()
            print(f"  done {job}: {totals[job]:,}", file=sys.stderr, flush=True)
            if job[0] in args.frozen and args.keep:
                cache[f"{trees[job[0]]}|{job[1]}|{job[2]}|{job[3]}"] = totals[job]
                with open(cache_file, "w") as f:
                    json.dump(cache, f, indent=1)
    rows = {}
    print(f"\ninstructions per message (N={args.n}; callgrind outputs in {workdir})")
    print(header(trees))
    for name in names:
        for twin in TWINS:
            per = {
                label: (totals[(label, twin, name, args.n)] - totals[(label, twin, name, 0)]) / args.n
                for label in trees
            }
            rows[f"{name}[{twin}]"] = per
            print(row(f"{name}[{twin}]", per))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def wait_for_port(server: subprocess.Popen[Any], port_file: str, seconds: float, what: str) -> str:
    """The port the benchmark server wrote to ``port_file`` once listening; exits if it died or took too long."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(port_file):
        if server.poll() is not None or time.monotonic() > deadline:
            stderr = server.stderr.read() if server.stderr and not server.stderr.closed else ""
            raise SystemExit(f"server did not start {what}: {stderr}")
        time.sleep(0.05)
    with open(port_file) as f:
        return f.read()


def mem_once(tree: str, twin: str, conns: int, traced: bool) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        cmd = [sys.executable, os.path.join(HERE, "native_server.py"), port_file] + (
            ["--tracemalloc"] if traced else []
        )
        server = subprocess.Popen(
            cmd, env=env_for(tree, twin), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            port = wait_for_port(server, port_file, 60, "")
            client = [sys.executable, os.path.join(HERE, "native_client.py"), port, "idle", str(conns)]
            done = subprocess.run(
                client, check=True, timeout=600, capture_output=True, text=True, env=env_for(ROOT, "cython")
            )
            server.wait(60)
        finally:
            if server.poll() is None:
                server.kill()
        check_import(server.stderr.read() if server.stderr else "", tree)
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def mem(args: argparse.Namespace) -> None:
    trees = trees_of(args)
    results: Dict[Tuple[str, str, str], List[float]] = {}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for twin in TWINS:
            for label in order:
                rss = mem_once(trees[label], twin, args.conns, False)["rss"]
                traced = mem_once(trees[label], twin, args.conns, True)["traced"]
                results.setdefault((label, twin, "rss"), []).append(rss)
                results.setdefault((label, twin, "traced"), []).append(traced)
                print(
                    f"  round {r + 1} {label}[{twin}]: rss {rss:,.0f} B/conn, traced {traced:,.0f} B/conn",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"\nbytes per idle connection, native server ({args.conns} connections, median of {args.rounds})")
    print(header(trees))
    rows = {}
    for twin in TWINS:
        for what in ("rss", "traced"):
            values = {label: statistics.median(results[(label, twin, what)]) for label in trees}
            rows[f"idle-{what}[{twin}]"] = values
            print(row(f"idle-{what}[{twin}]", values))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ir", "mem"])
    parser.add_argument("--base", default=os.environ.get("FASTWSRPC_PERF_BASE", "/tmp/basewt"))
    parser.add_argument("--head", default=ROOT)
    parser.add_argument("--tree", action="append", help="NAME=DIR: one more tree to measure (a column)")
    parser.add_argument("--n", type=int, default=20_000, help="messages per ir run (and a run with 0)")
    parser.add_argument("--only", nargs="*", choices=CHANNEL + NATIVE)
    parser.add_argument("--jobs", type=int, default=1, help="callgrind runs at once")
    parser.add_argument("--keep", help="directory for callgrind's outputs (callgrind_annotate them) and kept counts")
    parser.add_argument("--frozen", nargs="*", default=["base"], help="trees whose counts --keep may reuse")
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    (ir if args.what == "ir" else mem)(args)


if __name__ == "__main__":
    main()
