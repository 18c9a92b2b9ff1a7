"""CPU and instructions per 1 MiB echo, per side, from ``echo.py``'s two processes.

    python benchmarks/bigmsg/measure.py cpu PAIR [--n 40] [--runs 3]
    python benchmarks/bigmsg/measure.py callgrind PAIR SIDE [--n 10] [--size BYTES] [--calls N]

PAIR is SERVER/CLIENT: ``native/native``, ``fastapi/native``, ``picows/picows``.

``cpu``: wall time per echo, and each process's CPU time per echo (the
server's from /proc, the client's from its own ``process_time``); a
machine-noise-resistant view, as a process's CPU time does not count the time
it waits for the other. ``callgrind``: SIDE (``server`` or ``client``) runs
under ``valgrind --tool=callgrind`` twice, with 2 and with 2 + N echoes (or
small calls with ``--size 0 --calls N``); the difference of the two totals
over N is the instructions one echo (one call) costs that side, start-up and
warm-up excluded. The profile of the longer run stays in /tmp/bigmsg/ for
``callgrind_annotate``. Environment variables pass through
(FASTWSRPC_NO_EXTENSIONS=1 for the pure twin). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ECHO = os.path.join(HERE, "echo.py")
OUT = "/tmp/bigmsg"


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _start_server(kind: str, prefix: List[str]) -> tuple[subprocess.Popen[bytes], int]:
    fd, port_file = tempfile.mkstemp(prefix="bigmsg-port-")
    os.close(fd)
    os.unlink(port_file)
    proc = subprocess.Popen([*prefix, sys.executable, ECHO, "serve", kind, port_file], env=_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited")
        if os.path.exists(port_file):
            with open(port_file) as f:
                port = int(f.read())
            os.unlink(port_file)
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(kind: str, port: int, n: int, prefix: Optional[List[str]] = None, **kw: Any) -> Dict[str, Any]:
    cmd = (prefix or []) + [sys.executable, ECHO, "drive", kind, str(port), str(n)]
    for key, value in kw.items():
        cmd += [f"--{key}", str(value)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"driver failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def cpu(pair: str, n: int, runs: int) -> None:
    server_kind, client_kind = pair.split("/")
    rows = []
    for _ in range(runs):
        proc, port = _start_server(server_kind, [])
        try:
            before = _cpu_seconds(proc.pid)
            out = _drive(client_kind, port, n)
            # The server's CPU over the warm-up too: two echoes more than timed.
            out["echo_server_cpu_ms"] = (_cpu_seconds(proc.pid) - before) / (n + 2) * 1e3
        finally:
            _stop(proc)
        rows.append(out)
    for key in ("echo_MB_s", "echo_wall_ms", "echo_client_cpu_ms", "echo_server_cpu_ms"):
        values = [r[key] for r in rows]
        print(f"{pair} {key}: median {statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]")


def _callgrind_total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _one_callgrind(pair: str, side: str, n: int, size: int, calls: int, tag: str) -> int:
    server_kind, client_kind = pair.split("/")
    os.makedirs(OUT, exist_ok=True)
    out_file = f"{OUT}/cg.{pair.replace('/', '-')}.{side}.{tag}.out"
    prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", "--dump-instr=no"]
    proc, port = _start_server(server_kind, prefix if side == "server" else [])
    try:
        echoes, small = (n, 0) if size else (0, n)
        _drive(client_kind, port, echoes, prefix if side == "client" else None, size=size or 1, calls=small + calls)
    finally:
        _stop(proc)
    return _callgrind_total(out_file)


def callgrind(pair: str, side: str, n: int, size: int, calls: int) -> None:
    short = _one_callgrind(pair, side, 0, size, calls, "short")
    long = _one_callgrind(pair, side, n, size, calls, "long")
    what = "echo" if size else "call"
    per = (long - short) / n
    print(f"{pair} {side}: {per:,.0f} instructions per {what} ({long:,} - {short:,} over {n})")
    print(f"profile: {OUT}/cg.{pair.replace('/', '-')}.{side}.long.out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("pair")
    c.add_argument("--n", type=int, default=40)
    c.add_argument("--runs", type=int, default=3)
    g = sub.add_parser("callgrind")
    g.add_argument("pair")
    g.add_argument("side", choices=["server", "client"])
    g.add_argument("--n", type=int, default=10)
    g.add_argument("--size", type=int, default=1024 * 1024, help="echo size; 0: small calls instead")
    g.add_argument("--calls", type=int, default=0)
    args = parser.parse_args()
    if args.cmd == "cpu":
        cpu(args.pair, args.n, args.runs)
    else:
        callgrind(args.pair, args.side, args.n, args.size, args.calls)


if __name__ == "__main__":
    main()
