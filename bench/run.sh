#!/usr/bin/env bash
# Benchmark mailroom, and optionally the original design's reference, on one PostgreSQL.
#
# Usage: bench/run.sh [seconds per scenario, default 10]
#
# Environment:
#   BENCH_DATABASE_URL  server to create the benchmark databases on
#                       [postgresql://postgres@127.0.0.1:5432]
#   BENCH_REFERENCE     folder of the reference (e.g. ../shared/bench/reference); when set,
#                       it runs the same scenarios right after mailroom and the table
#                       shows both sides and the ratio
#   BENCH_CEILING       folder of the ceiling apps (e.g. ../shared/bench/ceilings); when set,
#                       its minimal Starlette + psycopg + msgspec users_app serves GET /users/1
#                       from mailroom's database, the most a route touching the database can do,
#                       right after mailroom's GET /users/1 (bench/ceiling_turns.sh alternates
#                       the two over many rounds)
#   BENCH_WORK          where seeds, raw results and logs go [/tmp/mailroom-bench]; the
#                       benchmark databases are dropped when the run ends
#   WRK_THREADS [2]  WRK_CONNECTIONS [64]
#
# Needs wrk (apt-get install wrk). Each server runs as one uvicorn worker with
# uvloop and httptools and no access log, as the reference's run.sh does.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
DURATION=${1:-10}
WORK=${BENCH_WORK:-/tmp/mailroom-bench}
THREADS=${WRK_THREADS:-2}
CONNECTIONS=${WRK_CONNECTIONS:-64}
RESULTS=$WORK/results.tsv

ready
mkdir -p "$WORK"
: >"$RESULTS"
SERVER_PID=

log() { echo "== $*" >&2; }

CEILING_PID=

stop_server() {
  stop_process "$SERVER_PID"
  SERVER_PID=
}

stop_ceiling() {
  stop_process "$CEILING_PID"
  CEILING_PID=
}
# The benchmark databases go when the run ends, however it ends.
trap 'stop_ceiling; stop_server; databases drop mailroom_bench reference_bench || true' EXIT

# scenario SIDE NAME URL wrk-script-arguments...
scenario() {
  local side=$1 name=$2 url=$3
  shift 3
  log "$side: $name"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d1s --latency -s "$HERE/scenarios.lua" "$url" -- "$@" >/dev/null
  local line
  line=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s -s "$HERE/scenarios.lua" \
    "$url" -- "$@" | tee "$WORK/$side-$name.txt" | grep '^RESULT' | tail -1)
  echo -e "$side\t$name\t${line#RESULT }" >>"$RESULTS"
}

# The ceiling's GET /users/1 on mailroom's database (migrated and seeded by then), run
# while mailroom's server idles; its run.sh execs uvicorn, so its pid is the server's.
ceiling_user() {
  log "ceiling: users_app"
  DATABASE_URL="$SERVER/mailroom_bench" "$BENCH_CEILING/run.sh" users_app 8204 \
    >"$WORK/ceiling.log" 2>&1 &
  CEILING_PID=$!
  wait_healthy http://127.0.0.1:8204
  scenario ceiling user http://127.0.0.1:8204 get /users/1
  stop_ceiling
}

peak_rss_mb() {
  awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$SERVER_PID/status"
}

run_side() {
  local side=$1 url=$2 flavour=$3
  local seed=$WORK/seed-$side
  wait_healthy "$url"
  log "$side: seeding"
  "$PY" "$HERE/seed.py" "$url" "$seed"
  local inbox100 inbox5000 conversation
  inbox100=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['inbox100'])" "$seed/seed.json")
  inbox5000=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['inbox5000'])" "$seed/seed.json")
  conversation=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['conversation'])" "$seed/seed.json")
  scenario "$side" health "$url" get /health
  scenario "$side" user "$url" get /users/1
  if [[ $side == mailroom && -n ${BENCH_CEILING:-} ]]; then
    ceiling_user  # right after mailroom's, so that both see the machine in the same state
  fi
  scenario "$side" create_agent "$url" post /agents '{"agent_name":"benchmark agent {n}"}'
  scenario "$side" pull_100 "$url" get "/agents/$inbox100/messages?limit=100"
  scenario "$side" unread_100 "$url" get "/agents/$inbox100/messages/unread?limit=100"
  log "$side: whole 5,000-message mailbox"
  echo -e "$side\tmailbox_5000\t$("$PY" "$HERE/walk.py" "$url" "$inbox5000" 10 | sed 's/^RESULT //')" >>"$RESULTS"
  scenario "$side" details_200 "$url" get "/conversations/$conversation/details"
  scenario "$side" send_3 "$url" send "$seed" "$flavour"
  scenario "$side" mark_read "$url" put "/agents/$inbox100/messages/mark-read" \
    '{"read_up_to_date":"2100-01-01T00:00:00Z"}'
  scenario "$side" mixed "$url" mixed "$seed" "$flavour"
  echo -e "$side\tpeak_rss_mb\t$(peak_rss_mb)" >>"$RESULTS"
  stop_server
}

# mailroom runs as it ships (MAILROOM_AUTH=required); every client of both sides
# sends this admin key, which costs mailroom a SHA-256 and no query per request.
BENCH_TOKEN=$(admin_token)
export BENCH_AUTHORIZATION="Bearer $BENCH_TOKEN"

log "mailroom"
databases create mailroom_bench
(cd "$ROOT" && DATABASE_URL="$SERVER/mailroom_bench" MAILROOM_ADMIN_TOKEN="$BENCH_TOKEN" \
  exec "$PY" -m uvicorn service:app \
  --host 127.0.0.1 --port 8201 --workers 1 --loop uvloop --http httptools \
  --no-access-log --log-level warning) >"$WORK/mailroom.log" 2>&1 &
SERVER_PID=$!
run_side mailroom http://127.0.0.1:8201 ids

if [[ -n ${BENCH_REFERENCE:-} ]]; then
  log "reference"
  databases create reference_bench
  DATABASE_URL="${SERVER/postgresql:/postgresql+asyncpg:}/reference_bench" \
    "$BENCH_REFERENCE/run.sh" 8202 >"$WORK/reference.log" 2>&1 &
  SERVER_PID=$!
  run_side reference http://127.0.0.1:8202 chain
fi

"$PY" "$HERE/report.py" "$RESULTS"
