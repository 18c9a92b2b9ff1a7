"""Many idle connections on one machine: memory, opening rate, latency beside them, fan-out, idle CPU.

    python benchmarks/scale.py                      # 2,000 connections, one native server process
    python benchmarks/scale.py --n 19000            # one process, as many as its 20,000 descriptors allow
    python benchmarks/scale.py --n 100000           # `fastwsrpc serve --workers 6 --broker redis://...`
    python benchmarks/scale.py --server fastapi --n 10000
    python benchmarks/scale.py --n 10000 --json     # one JSON object on stdout, for comparisons

The server is ``fastwsrpc serve benchmarks.scale:ScaleMethods`` (``--asgi`` for
the FastAPI endpoint under uvicorn) on a free 127.0.0.1 port. With more
connections than one process may hold (``--per-worker``, 19,000 by default:
a process here may open at most 20,000 descriptors), ``--workers`` defaults to
as many as needed, sharing one port (SO_REUSEPORT spreads the connections) and
a ``redis-server`` this script starts on a free port (or ``--broker URL``).

The connections are opened by client processes (``--per-client``, 15,000 each
by default), each a :class:`~fastwsrpc.WebSocketRpcClient` on the native
transport, each process binding its connections to its own loopback source
address (127.0.0.2, 127.0.0.3, ...): one address pair has about 28,000
ephemeral ports. Every process raises its descriptor soft limit to the hard one.

Phases, each bounded in time (``--timeout`` scales them):

1. the server alone: RSS and p50/p99 of ``--calls`` sequential calls (one probe client);
2. open the connections in steps (1,000; 10,000; N): after each, the server's RSS
   over what it had alone, per connection, and the connections opened per second;
3. idle for ``--idle`` seconds: the server's CPU (user + system, every process)
   per connection per second, WebSocket pings of both sides included;
4. p50/p99 of the same calls beside the N idle connections;
5. every connection subscribes to one topic; RSS per subscriber; then ``--publishes``
   publications (each one call to the server's ``publish``): the time from the call
   to the moment the last of the N subscribers has the event (every process
   stamps its last arrival; the clock is the machine's).

At the end (also on an error or Ctrl-C) every process this script started is
killed by its pid. Figures depend on the machine and on what else runs on it:
compare runs made side by side.

The subscribers' arrival is taken where the client decodes the item (each
stream's ``_push``), not through a task per subscription: the client processes
share the two cores with the server, and a task switch per event would be
their cost, not the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from fastwsrpc import RpcMethodsBase
from fastwsrpc.gctune import GC_THRESHOLD, tune_gc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOPIC = "scale"
#: Connections a client process opens at once (handshakes in flight). With 7 client
#: processes and 6 workers on 2 cores, 200 each left handshakes waiting past 10 s.
OPEN_CONCURRENCY = 64
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")
_TRACE: Dict[str, Any] = {}
#: Where each server process stamps the moment it has written a publication to its subscribers
#: (set by the controller for the server's processes; see :func:`_stamp_fan_out`).
STAMPS_ENV = "FASTWSRPC_SCALE_STAMPS"


def _stamp_fan_out(folder: str) -> None:
    """In a server process: after each ``publish_local``, append ``seq end-time subscribers`` to a file of its own.

    The time a publication takes to reach N subscribers is the server's writing
    plus the client processes' reading, on the same cores; this stamp separates
    the server's part (the last worker done) from the rest.
    """
    from fastwsrpc.topics import TopicHub

    real = TopicHub.publish_local
    path = os.path.join(folder, f"{os.getpid()}.stamps")

    def publish_local(self: TopicHub, topic: str, data: Any, *args: Any) -> int:
        count = real(self, topic, data, *args)
        if isinstance(data, dict) and isinstance(data.get("seq"), int):
            with open(path, "a") as f:
                f.write(f"{data['seq']} {time.time()} {count}\n")
        return count

    TopicHub.publish_local = publish_local  # type: ignore[method-assign,assignment]


def read_stamps(folder: str, seq: int) -> List[float]:
    """Every server process's stamp for publication ``seq``: when it had written it to its subscribers."""
    ends: List[float] = []
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and int(parts[0]) == seq:
                    ends.append(float(parts[1]))
    return ends


if os.environ.get(STAMPS_ENV):
    _stamp_fan_out(os.environ[STAMPS_ENV])


class ScaleMethods(RpcMethodsBase):
    """What the benchmark's server serves: a trivial call, and ``publish`` through the node's cluster."""

    def __init__(self, cluster: Any = None) -> None:
        super().__init__()
        self.cluster = cluster

    async def echo(self, value: Any = None) -> Any:
        """The call whose latency is measured."""
        return value

    async def publish(self, topic: str, data: Any = None) -> bool:
        """Publish ``data`` on ``topic`` to every subscriber, on every worker."""
        await self.cluster.publish_topic(topic, data)
        return True

    async def trace_mark(self) -> bool:
        """Take the baseline snapshot (the server runs with ``PYTHONTRACEMALLOC``; ``--tracemalloc``)."""
        import gc
        import tracemalloc

        gc.collect()
        _TRACE["base"] = tracemalloc.take_snapshot()
        return tracemalloc.is_tracing()

    async def trace_report(self, top: int = 25) -> Dict[str, Any]:
        """Python heap grown since :meth:`trace_mark`: total, by file, by line (the ``top`` largest)."""
        import gc
        import tracemalloc

        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        base = _TRACE["base"]
        report: Dict[str, Any] = {"traced_kb": tracemalloc.get_traced_memory()[0] // 1024}
        for group in ("filename", "lineno"):
            diff = snap.compare_to(base, group)
            report["total_bytes"] = sum(d.size_diff for d in diff)
            report[group] = [
                [str(d.traceback[0]).replace(ROOT + "/", "").replace(sys.prefix + "/", ""), d.size_diff, d.count_diff]
                for d in diff[:top]
            ]
        return report


# ----------------------------------------------------------------- process helpers
def raise_nofile() -> int:
    """Raise this process's descriptor soft limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(root: int) -> List[int]:
    """``root`` and its descendants (from /proc), so a supervisor's workers are counted too."""
    children: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def rss_kb(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except OSError:
            pass
    return total


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / TICKS


def open_sockets(pids: Sequence[int]) -> Dict[int, int]:
    """Descriptors held by each process (its connections, roughly): how the workers share them."""
    held = {}
    for pid in pids:
        try:
            held[pid] = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return held


def kill_all(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGTERM each process we started and its descendants, by pid; SIGKILL what is left after 5 s."""
    pids: List[int] = []
    for proc in procs:
        if proc.poll() is None:
            pids.extend(process_tree(proc.pid))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------- a client process
class ClientProcess:
    """One process holding up to ``--per-client`` connections; driven by JSON lines on stdin."""

    def __init__(self, url: str, source: str, ping_interval: Optional[float]) -> None:
        self.url = url
        self.ping_interval = ping_interval
        self.source = source
        self.clients: List[Any] = []
        self.failed = 0
        self.errors: Dict[str, int] = {}
        self.subscribed = 0
        self.arrived: Dict[int, List[float]] = {}  # seq -> [count, first, last]
        self.out = sys.stdout

    def say(self, **message: Any) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    async def open_one(self) -> None:
        from fastwsrpc import WebSocketRpcClient

        client = WebSocketRpcClient(
            self.url,
            local_addr=(self.source, 0),
            auto_reconnect=False,
            default_response_timeout=60.0,
            ping_interval=self.ping_interval,
            open_timeout=60.0,
        )
        try:
            await asyncio.wait_for(client.__aenter__(), 60.0)
        except Exception as exc:
            self.failed += 1
            key = type(exc).__name__
            self.errors[key] = self.errors.get(key, 0) + 1
            try:
                await client.close()
            except Exception:
                pass
            return
        self.clients.append(client)

    async def open_upto(self, count: int) -> None:
        started = time.perf_counter()
        want = count - len(self.clients)
        todo = iter(range(max(0, want)))

        async def worker() -> None:
            for _ in todo:
                await self.open_one()

        await asyncio.gather(*(worker() for _ in range(min(OPEN_CONCURRENCY, max(1, want)))))
        self.say(
            ok=True,
            held=len(self.clients),
            failed=self.failed,
            errors=self.errors,
            seconds=time.perf_counter() - started,
        )

    async def subscribe_all(self) -> None:
        started = time.perf_counter()
        arrived = self.arrived

        def make_push(stream: Any) -> Any:
            def push(item: Any) -> bool:
                # The clock is read for a publication's first and last arrival only: this runs
                # for every item, on the cores the server shares (the harness's cost, not ours).
                try:
                    seq = item["data"]["seq"]
                    entry = arrived.get(seq)
                except (TypeError, KeyError):
                    return True
                if entry is None:
                    if type(seq) is not int:
                        return True
                    now = time.time()
                    arrived[seq] = entry = [0, now, now]
                entry[0] += 1
                if entry[0] == self.subscribed:
                    entry[2] = time.time()
                    self.say(event="got", seq=seq, count=entry[0], first=entry[1], last=entry[2])
                return True

            return push

        sem = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one(client: Any) -> bool:
            async with sem:
                try:
                    stream = client._require_channel().subscribe(TOPIC, buffer=64)
                    await asyncio.wait_for(stream.open(), 60.0)
                except Exception:
                    return False
                stream._push = make_push(stream)  # arrival stamped where the item is decoded
                return True

        results = await asyncio.gather(*(one(c) for c in self.clients))
        self.subscribed = sum(results)
        self.say(ok=True, subscribed=self.subscribed, seconds=time.perf_counter() - started)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.say(ok=True, ready=True, nofile=raise_nofile())
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd["cmd"] == "open":
                await self.open_upto(int(cmd["upto"]))
            elif cmd["cmd"] == "subscribe":
                await self.subscribe_all()
            elif cmd["cmd"] == "rss":
                self.say(ok=True, rss_kb=rss_kb([os.getpid()]), held=len(self.clients))
            elif cmd["cmd"] == "quit":
                break
        self.say(ok=True, bye=True)
        os._exit(0)  # closing 15,000 connections one by one is not what is measured


def client_main(url: str, source: str, ping_interval: Optional[float], gc_threshold: int) -> None:
    raise_nofile()
    tune_gc(gc_threshold)  # as the server does: this process holds thousands of connections too
    import fastwsrpc.client  # noqa: F401  (imported before the first connection is timed)

    process = ClientProcess(url, source, ping_interval if ping_interval and ping_interval > 0 else None)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(process.run())
    else:
        uvloop.run(process.run())


# ----------------------------------------------------------------- the controller
class Child:
    """A client process and its JSON-lines pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, popen: Any, source: str, share: int) -> None:
        self.proc = proc
        self.popen = popen
        self.source = source
        self.share = share
        self.events: asyncio.Queue[Dict[str, Any]] = asyncio.Queue()
        self.answers: asyncio.Queue[Dict[str, Any]] = asyncio.Queue()
        self.reader: Optional[asyncio.Task[None]] = None

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.answers.put({"ok": False, "error": "client process ended"})
                return
            try:
                message = json.loads(line)
            except ValueError:
                continue
            (self.events if "event" in message else self.answers).put_nowait(message)

    async def ask(self, timeout: float, **cmd: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self.answers.get(), timeout)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: List[Any] = []  # every process we started (Popen-like, with .pid)
        self.children: List[Child] = []
        self.server: Optional[subprocess.Popen[bytes]] = None
        self.result: Dict[str, Any] = {}
        self.log: List[str] = []
        #: The server processes' fan-out stamps (see :func:`_stamp_fan_out`), removed by :meth:`cleanup`.
        self.stamps = tempfile.mkdtemp(prefix="fastwsrpc-scale-")

    def note(self, text: str) -> None:
        self.log.append(text)
        print(f"[scale] {text}", file=sys.stderr, flush=True)

    def server_pids(self) -> List[int]:
        assert self.server is not None
        return process_tree(self.server.pid)

    def start_redis(self) -> str:
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return f"redis://127.0.0.1:{port}/0"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start within 10 s")

    def start_server(self, workers: int, broker: Optional[str]) -> str:
        port = free_port()
        cmd = [sys.executable, "-m", "fastwsrpc", "serve", "benchmarks.scale:ScaleMethods", "--port", str(port)]
        cmd += ["--log-level", "warning"]
        if self.args.server == "fastapi":
            cmd.append("--asgi")
        if workers > 1:
            cmd += ["--workers", str(workers)]
        if broker:
            cmd += ["--broker", broker]
        cmd += ["--gc-threshold", str(self.args.gc_threshold)]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env[STAMPS_ENV] = self.stamps
        if self.args.tracemalloc:
            env["PYTHONTRACEMALLOC"] = "1"
        self.server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sys.stderr, preexec_fn=raise_nofile_quietly)
        self.procs.append(self.server)
        deadline = time.monotonic() + 30 + 5 * workers
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"the server exited with {self.server.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                if workers == 1 or len(self.server_pids()) > workers:
                    time.sleep(1.0 if workers == 1 else 3.0)  # every worker listening
                    return f"ws://127.0.0.1:{port}/ws"
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not listen in time")

    async def start_clients(self, url: str, n: int) -> None:
        per = self.args.per_client
        count = max(1, math.ceil(n / per))
        base = n // count
        for i in range(count):
            share = base + (1 if i < n - base * count else 0)
            source = f"127.0.0.{2 + i}"
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                os.path.abspath(__file__),
                "--role",
                "client",
                "--url",
                url,
                "--source",
                source,
                "--client-ping",
                # Under tracemalloc a snapshot stops the server for longer than a ping's timeout.
                "0" if self.args.tracemalloc else str(self.args.client_ping),
                "--gc-threshold",
                str(self.args.gc_threshold),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
                preexec_fn=raise_nofile_quietly,
            )
            child = Child(proc, proc, source, share)
            self.procs.append(_Pid(proc.pid))
            self.children.append(child)
            child.reader = asyncio.ensure_future(child.pump())
        for child in self.children:
            ready = await asyncio.wait_for(child.answers.get(), 60)
            if not ready.get("ok"):
                raise RuntimeError(f"client process {child.source}: {ready}")

    async def probe_calls(self, probe: Any, count: int) -> Dict[str, float]:
        for _ in range(min(50, count)):
            await probe.call("echo", {"value": 1}, timeout=30)
        times = []
        for _ in range(count):
            t = time.perf_counter()
            await probe.call("echo", {"value": 1}, timeout=30)
            times.append(time.perf_counter() - t)
        return {
            "p50_ms": round(1000 * percentile(times, 0.5), 3),
            "p99_ms": round(1000 * percentile(times, 0.99), 3),
        }

    async def main(self) -> Dict[str, Any]:
        from fastwsrpc import WebSocketRpcClient

        args = self.args
        n = args.n
        workers = args.workers or (1 if n <= args.per_worker else math.ceil(n / args.per_worker))
        broker = args.broker
        if workers > 1 and not broker:
            broker = self.start_redis()
        r = self.result
        r.update(server=args.server, n=n, workers=workers, broker=bool(broker), cpus=os.cpu_count())
        scale = args.timeout
        url = self.start_server(workers, broker)
        self.note(f"server {args.server} on {url}, {workers} worker(s){', broker ' + broker if broker else ''}")

        ping = None if args.tracemalloc or not args.client_ping else args.client_ping
        probe = WebSocketRpcClient(url, auto_reconnect=False, default_response_timeout=120.0, ping_interval=ping)
        await asyncio.wait_for(probe.__aenter__(), 30)
        try:
            r["idle_server_call"] = await asyncio.wait_for(self.probe_calls(probe, args.calls), 60 * scale)
            await asyncio.sleep(1.0)
            if args.tracemalloc:
                r["tracing"] = (await probe.call("trace_mark", timeout=60)).result
            base_rss = rss_kb(self.server_pids())
            r["base_rss_kb"] = base_rss
            self.note(f"server alone: RSS {base_rss / 1024:.1f} MiB, call {r['idle_server_call']}")

            await self.start_clients(url, n)
            marks = (1000, 5000) if args.tracemalloc else (1000, 10000)
            steps = sorted({s for s in marks if s < n} | {n})
            r["steps"] = []
            opened_total = 0.0
            for step in steps:
                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(
                        child.ask(120 + step / 100 * scale, cmd="open", upto=round(child.share * step / n))
                        for child in self.children
                    )
                )
                seconds = time.perf_counter() - started
                held = sum(a.get("held", 0) for a in answers)
                failed = sum(a.get("failed", 0) for a in answers)
                errors: Dict[str, int] = {}
                for a in answers:
                    for k, v in (a.get("errors") or {}).items():
                        errors[k] = errors.get(k, 0) + v
                new = held - (r["steps"][-1]["held"] if r["steps"] else 0)
                opened_total += seconds
                await asyncio.sleep(args.settle)
                pids = self.server_pids()
                rss = rss_kb(pids)
                entry = {
                    "target": step,
                    "held": held,
                    "failed": failed,
                    "errors": errors,
                    "open_per_s": round(new / seconds, 1) if seconds > 0 else None,
                    "rss_kb": rss,
                    "kb_per_conn": round((rss - base_rss) / held, 2) if held else None,
                    "fds": sorted(open_sockets(pids).values()),
                }
                if args.tracemalloc:
                    report = (await probe.call("trace_report", {"top": args.top}, timeout=120)).result
                    report["bytes_per_conn"] = round(report["total_bytes"] / held) if held else None
                    entry["tracemalloc"] = report
                r["steps"].append(entry)
                self.note(f"step {step}: " + json.dumps({k: v for k, v in entry.items() if k != "tracemalloc"}))
            held = r["steps"][-1]["held"]
            r["held"] = held
            r["open_per_s"] = round(held / opened_total, 1) if opened_total else None

            # idle CPU, pings of both sides included
            pids = self.server_pids()
            c0, t0 = cpu_seconds(pids), time.monotonic()
            await asyncio.sleep(args.idle)
            c1, t1 = cpu_seconds(pids), time.monotonic()
            r["idle_cpu_s"] = round(c1 - c0, 3)
            r["idle_window_s"] = round(t1 - t0, 2)
            r["cpu_us_per_conn_s"] = round(1e6 * (c1 - c0) / (t1 - t0) / held, 3) if held else None
            r["idle_cpu_percent"] = round(100 * (c1 - c0) / (t1 - t0), 1)
            self.note(f"idle: {r['cpu_us_per_conn_s']} us CPU per connection per second ({r['idle_cpu_percent']}%)")

            r["busy_server_call"] = await asyncio.wait_for(self.probe_calls(probe, args.calls), 60 * scale)
            p50_ratio = r["busy_server_call"]["p50_ms"] / max(1e-6, r["idle_server_call"]["p50_ms"])
            r["call_p50_ratio"] = round(p50_ratio, 2)
            self.note(f"call beside {held} idle: {r['busy_server_call']} ({p50_ratio:.2f}x)")

            if args.publishes:
                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(child.ask(120 + n / 50 * scale, cmd="subscribe") for child in self.children)
                )
                subscribed = sum(a.get("subscribed", 0) for a in answers)
                r["subscribed"] = subscribed
                r["subscribe_s"] = round(time.perf_counter() - started, 2)
                await asyncio.sleep(args.settle)
                rss = rss_kb(self.server_pids())
                r["rss_subscribed_kb"] = rss
                r["kb_per_subscriber"] = round((rss - r["steps"][-1]["rss_kb"]) / subscribed, 2) if subscribed else None
                self.note(f"{subscribed} subscribed in {r['subscribe_s']} s; {r['kb_per_subscriber']} kB each")
                r["publish_s"] = []
                client_pids = [child.proc.pid for child in self.children]
                server_pids = self.server_pids()
                for seq in range(1, args.publishes + 1):
                    cpu_server, cpu_clients = cpu_seconds(server_pids), cpu_seconds(client_pids)
                    sent = time.time()
                    await probe.call("publish", {"topic": TOPIC, "data": {"seq": seq, "t": sent}}, timeout=60)
                    lasts: List[float] = []
                    for child in self.children:
                        try:
                            while True:
                                event = await asyncio.wait_for(child.events.get(), 30 * scale)
                                if event.get("seq") == seq:
                                    lasts.append(event["last"])
                                    break
                        except asyncio.TimeoutError:
                            self.note(f"publish {seq}: client {child.source} did not get all its events in time")
                            break
                    if len(lasts) == len(self.children):
                        r["publish_s"].append(round(max(lasts) - sent, 4))
                        # Where the publication's time went: CPU per subscriber, idle work (pings) included.
                        for key, pids, before in (
                            ("server", server_pids, cpu_server),
                            ("clients", client_pids, cpu_clients),
                        ):
                            used = (cpu_seconds(pids) - before) / subscribed * 1e6
                            r.setdefault(f"publish_cpu_us_{key}", []).append(round(used, 2))
                        ends = read_stamps(self.stamps, seq)
                        if ends:
                            r.setdefault("server_written_s", []).append(round(max(ends) - sent, 4))
                    await asyncio.sleep(1.0)
                if r["publish_s"]:
                    r["publish_median_s"] = statistics.median(r["publish_s"])
                if r.get("server_written_s"):
                    r["server_written_median_s"] = statistics.median(r["server_written_s"])
                self.note(f"publish to {subscribed}: {r['publish_s']} s")
                self.note(f"  written by the server (every worker done): {r.get('server_written_s')} s")
                for key in ("server", "clients"):
                    self.note(f"  CPU per subscriber, {key}: {r.get(f'publish_cpu_us_{key}')} us")
            for child in self.children:
                answer = await child.ask(30, cmd="rss")
                r.setdefault("client_rss_kb", []).append(answer.get("rss_kb"))
        finally:
            try:
                await asyncio.wait_for(probe.close(), 5)
            except Exception:
                pass
        return r


class _Pid:
    """A process known by its pid only (an asyncio child), killable by :func:`kill_all`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> Optional[int]:
        """None while it runs; 0 once it exited (a zombie counts: asyncio's watcher reaps it, not us)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return 0
        return 0 if state in ("Z", "X") else None

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("client", timeout)
            time.sleep(0.05)
        return 0


def raise_nofile_quietly() -> None:
    try:
        raise_nofile()
    except (OSError, ValueError):
        pass


def table(results: List[Dict[str, Any]]) -> str:
    """The README's table: one row per run."""
    lines = [
        "| server | connections | workers | kB/conn at 1k / 10k / N | opened/s | call p50/p99 idle server "
        "| call p50/p99 beside N | publish to N (s): all received / written by the server | CPU us/conn/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per = {s["target"]: s.get("kb_per_conn") for s in r.get("steps", [])}
        kb = " / ".join("-" if per.get(t) is None else f"{per[t]:.1f}" for t in (1000, 10000, r["n"]))
        idle, busy = r.get("idle_server_call", {}), r.get("busy_server_call", {})
        pub, written = r.get("publish_median_s"), r.get("server_written_median_s")
        lines.append(
            f"| {r['server']} | {r.get('held', 0):,} | {r['workers']} | {kb} | {r.get('open_per_s')} "
            f"| {idle.get('p50_ms')} / {idle.get('p99_ms')} ms | {busy.get('p50_ms')} / {busy.get('p99_ms')} ms "
            f"| {'-' if pub is None else f'{pub:.3f}'} / {'-' if written is None else f'{written:.3f}'} "
            f"| {r.get('cpu_us_per_conn_s')} |"
        )
    return "\n".join(lines)


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="idle connections to open (default 2,000)")
    p.add_argument("--server", choices=["native", "fastapi"], default="native")
    p.add_argument("--workers", type=int, default=0, help="server processes (default: as many as --n needs)")
    p.add_argument("--per-worker", type=int, default=19000, help="connections one server process may hold")
    p.add_argument("--per-client", type=int, default=15000, help="connections per client process")
    p.add_argument("--broker", help="cluster broker URL for --workers > 1 (default: a redis-server started here)")
    p.add_argument("--calls", type=int, default=500, help="sequential calls per latency measurement")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    p.add_argument("--publishes", type=int, default=3, help="publications to time (0: no subscribe phase)")
    p.add_argument("--timeout", type=float, default=1.0, help="scale every phase's time limit by this")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the server under tracemalloc and report, after each step, where its Python heap grew "
        "(by file and by line; RSS figures of such a run are inflated by the tracing itself)",
    )
    p.add_argument("--client-ping", type=float, default=20.0, help="the clients' WebSocket ping interval (0: none)")
    p.add_argument("--top", type=int, default=25, help="lines of the --tracemalloc report")
    p.add_argument(
        "--gc-threshold",
        type=int,
        default=GC_THRESHOLD,
        help="the server's and the client processes' young-generation GC threshold (fastwsrpc serve's "
        "--gc-threshold; 0: Python's 700)",
    )
    p.add_argument("--role", choices=["controller", "client"], default="controller", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    if args.role == "client":
        client_main(args.url, args.source, args.client_ping, args.gc_threshold)
        return 0
    raise_nofile()
    run = Run(args)

    async def bounded() -> Dict[str, Any]:
        limit = (300 + args.n / 50 + args.idle + 60 * args.publishes) * args.timeout
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):  # also when started in the background (SIGINT ignored)
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        try:
            return await asyncio.wait_for(run.main(), limit)
        finally:
            kill_all(run.procs)
            for child in run.children:  # reap them here, before the loop that owns their pipes closes
                if child.reader is not None:
                    child.reader.cancel()
                try:
                    await asyncio.wait_for(child.proc.wait(), 5)
                except (asyncio.TimeoutError, ProcessLookupError):
                    pass

    code = 0
    try:
        result = asyncio.run(bounded())
    except BaseException as exc:  # also Ctrl-C: every process still goes
        run.result["error"] = f"{type(exc).__name__}: {exc}"
        result = run.result
        code = 1
    finally:
        kill_all(run.procs)
        shutil.rmtree(run.stamps, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
        print()
        print(table([result]))
    return code


if __name__ == "__main__":
    sys.exit(main())
