#!/usr/bin/env bash
# The whole example on one machine: Redis, two server workers, two job workers, one submitter.
# Everything listens on 127.0.0.1 and is stopped by PID at the end.
#   bash examples/cluster/run.sh          (from the repository root, with .venv made by `make install`)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
REDIS_PORT=${REDIS_PORT:-6399}
pids=()
cleanup() {  # newest first: the servers go before Redis
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() {  # bounded: 100 tries of 0.1 s
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null & pids+=($!)
wait_port "$REDIS_PORT"
export FASTWSRPC_BROKER="redis://127.0.0.1:$REDIS_PORT/0"
for port in 8001 8002; do
  "$PY" -m uvicorn examples.cluster.server:app --host 127.0.0.1 --port "$port" --log-level warning & pids+=($!)
done
wait_port 8001; wait_port 8002
# Both job workers connect to server 8001; the jobs are submitted to server 8002.
for n in 1 2; do "$PY" examples/cluster/worker.py "ws://127.0.0.1:8001/ws/worker-$n" 30 & pids+=($!); done
sleep 1  # give the workers a moment to register (a demo, not a test)
"$PY" examples/cluster/submit.py ws://127.0.0.1:8002/ws/submitter 8
