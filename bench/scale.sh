#!/usr/bin/env bash
# Does latency stay flat as the tables grow? The same requests on a 10,000-message
# and a 1,000,000-message database (3 recipient rows per message, 10,000 agents),
# filled with COPY by bench/seed_scale.py; prints p99 per scenario and the ratio.
#
# Usage: bench/scale.sh [seconds per scenario, default 10] [large size, default 1000000]
# Environment: BENCH_DATABASE_URL [postgresql://postgres@127.0.0.1:5432],
#   BENCH_WORK [/tmp/mailroom-bench], WRK_THREADS [2], WRK_CONNECTIONS [16]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
DURATION=${1:-10}
LARGE=${2:-1000000}
WORK=${BENCH_WORK:-/tmp/mailroom-bench}/scale
THREADS=${WRK_THREADS:-2}
CONNECTIONS=${WRK_CONNECTIONS:-16}
SERVER_PID=

ready
# mailroom as it ships (MAILROOM_AUTH=required): the requests carry an admin key.
BENCH_TOKEN=$(admin_token)
export BENCH_AUTHORIZATION="Bearer $BENCH_TOKEN"
mkdir -p "$WORK"
: >"$WORK/results.tsv"

stop_server() {
  stop_process "$SERVER_PID"
  SERVER_PID=
}
trap 'stop_server; databases drop mailroom_scale_10000 "mailroom_scale_$LARGE"' EXIT

for size in 10000 "$LARGE"; do
  db=mailroom_scale_$size
  echo "== $size messages: seeding $db" >&2
  databases create "$db"
  probe=$("$PY" "$HERE/seed_scale.py" "$SERVER/$db" "$size")
  agent=$("$PY" -c "import json,sys; print(json.loads(sys.argv[1])['agent'])" "$probe")
  conversation=$("$PY" -c "import json,sys; print(json.loads(sys.argv[1])['conversation'])" "$probe")
  (cd "$ROOT" && DATABASE_URL="$SERVER/$db" MAILROOM_ADMIN_TOKEN="$BENCH_TOKEN" \
    exec "$PY" -m uvicorn service:app --host 127.0.0.1 \
    --port 8203 --workers 1 --loop uvloop --http httptools --no-access-log --log-level warning) \
    >"$WORK/mailroom-$size.log" 2>&1 &
  SERVER_PID=$!
  wait_healthy http://127.0.0.1:8203
  run() {
    local name=$1; shift
    echo "== $size: $name" >&2
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$HERE/scenarios.lua" http://127.0.0.1:8203 -- "$@" >/dev/null
    local line
    line=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$HERE/scenarios.lua" \
      http://127.0.0.1:8203 -- "$@" | grep '^RESULT' | tail -1)
    echo -e "$size\t$name\t${line#RESULT }" >>"$WORK/results.tsv"
  }
  run pull_100 get "/agents/$agent/messages?limit=100"
  run unread_100 get "/agents/$agent/messages/unread?limit=100"
  run mark_read put "/agents/$agent/messages/mark-read" '{"read_up_to_date":"2000-01-01T00:00:00Z"}'
  run details_200 get "/conversations/$conversation/details"
  stop_server
done

"$PY" - "$WORK/results.tsv" "$LARGE" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    size, name, requests, duration, p50, p99, errors = line.split()
    rows[(size, name)] = (float(requests) / float(duration), float(p50), float(p99), errors)
large = sys.argv[2]
print(f"| scenario | 10k req/s | 10k p99 ms | {large} req/s | {large} p99 ms | p99 ratio |")
print("|---|---|---|---|---|---|")
for name in ("pull_100", "unread_100", "mark_read", "details_200"):
    small, big = rows[("10000", name)], rows[(large, name)]
    print(f"| {name} | {small[0]:,.0f} | {small[2]:.2f} | {big[0]:,.0f} | {big[2]:.2f} | "
          f"{big[2] / small[2]:.2f}x |")
PY
