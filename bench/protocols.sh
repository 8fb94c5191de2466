#!/usr/bin/env bash
# GET /users/1 throughput of one worker under each HTTP protocol uvicorn can run:
# plain httptools (no bounds), h11 (bounds the head's size only) and the shipped
# service:HttpProtocol (httptools with the bounds of operations/http_limits.py).
#
# Usage: bench/protocols.sh [seconds per run, default 5] [rounds, default 3]
#
# The protocols take turns, round after round, so that a busy machine slows them
# alike; the table gives each run, the median and its ratio to httptools, and the
# server's CPU time per request (user + system, from /proc), which a machine
# shared with other work disturbs far less than the request rate. Environment: BENCH_DATABASE_URL [postgresql://postgres@127.0.0.1:5432],
# WRK_THREADS [2], WRK_CONNECTIONS [64]. Needs wrk (apt-get install wrk).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
DURATION=${1:-5}
ROUNDS=${2:-3}
PORT=8203
PROTOCOLS=(httptools h11 service:HttpProtocol)
TOKEN=$(admin_token)
LOG=$(mktemp -d)/server.log

ready
databases create mailroom_protocols

SERVER_PID=
stop_server() {
  stop_process "$SERVER_PID"
  SERVER_PID=
}
trap 'stop_server; databases drop mailroom_protocols' EXIT

declare -A RUNS CPU
for round in $(seq 1 "$ROUNDS"); do
  for protocol in "${PROTOCOLS[@]}"; do
    (cd "$ROOT" && DATABASE_URL="$SERVER/mailroom_protocols" MAILROOM_ADMIN_TOKEN="$TOKEN" \
      exec "$PY" -m uvicorn service:app --host 127.0.0.1 --port $PORT --workers 1 \
      --loop uvloop --http "$protocol" --no-access-log --log-level warning) >>"$LOG" 2>&1 &
    SERVER_PID=$!
    wait_healthy "http://127.0.0.1:$PORT"
    args=(-t"${WRK_THREADS:-2}" -c"${WRK_CONNECTIONS:-64}" -H "Authorization: Bearer $TOKEN")
    measured=$(wrk_cpu "$SERVER_PID" "$DURATION" "http://127.0.0.1:$PORT/users/1" "${args[@]}")
    read -r rps micros <<<"$measured"
    echo "== round $round: $protocol $rps req/s, $micros us CPU per request" >&2
    RUNS[$protocol]="${RUNS[$protocol]:-} $rps"
    CPU[$protocol]="${CPU[$protocol]:-} $micros"
    stop_server
  done
done

base=$(echo "${RUNS[httptools]}" | median)
cpu_base=$(echo "${CPU[httptools]}" | median)
printf "%-22s %-28s %7s %6s %12s %6s\n" protocol "runs (req/s)" median ratio "CPU us/req" ratio
for protocol in "${PROTOCOLS[@]}"; do
  m=$(echo "${RUNS[$protocol]}" | median)
  c=$(echo "${CPU[$protocol]}" | median)
  printf "%-22s %-28s %7s %6.2f %12s %6.2f\n" "$protocol" "${RUNS[$protocol]# }" "$m" \
    "$(echo "$m / $base" | bc -l)" "$c" "$(echo "$c / $cpu_base" | bc -l)"
done
