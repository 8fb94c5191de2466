#!/usr/bin/env bash
# GET /users/1 of mailroom against the ceiling app, the servers taking turns.
#
# Usage: bench/ceiling_turns.sh [seconds per run, default 5] [rounds, default 8]
#
# bench/run.sh measures the ceiling once, right after mailroom's GET /users/1; on a
# machine shared with other work one such pair can still meet different loads.
# Here both servers stay up and are measured one after the other in every round,
# in a new random order each round: mailroom as run.sh starts it (one worker,
# uvloop, httptools, auth on with the admin key, metrics and its request log
# on), the ceiling app (BENCH_CEILING, default ../shared/bench/ceilings) on the
# same database, and with BENCH_BASELINE=<git revision> the same mailroom at
# that revision (checked out in a temporary worktree). Each run gives req/s and
# the server's CPU time per request (user + system, from /proc): with one
# worker, its core is the limit, so the CPU ratio is the share of the ceiling's
# throughput mailroom reaches and moves less with the machine than req/s does.
# The medians over the rounds are the figures docs/performance.md quotes. The
# servers, the worktree and the database are gone when the script ends.
#
# BENCH_VARIANTS adds more mailroom servers, each with settings of its own and of
# this checkout or another revision, to find what a feature or a setting costs:
# space-separated name[@revision]:[VAR=value,...], e.g. "nolog:LOG_LEVEL=WARNING
# old4@748f832:MAILROOM_POOL_MAX_SIZE=4,MAILROOM_POOL_MIN_SIZE=4". The ceiling app
# reads POOL_MIN (its pool's size, default 4) from this script's environment.
#
# Environment: BENCH_DATABASE_URL [postgresql://postgres@127.0.0.1:5432],
# WRK_THREADS [2], WRK_CONNECTIONS [64]. Needs wrk (apt-get install wrk).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
DURATION=${1:-5}
ROUNDS=${2:-8}
CEILING=${BENCH_CEILING:-$ROOT/../shared/bench/ceilings}
TOKEN=$(admin_token)
WORK=$(mktemp -d)
DATABASE=mailroom_turns

ready
databases create "$DATABASE"

declare -A PID PORT RUNS CPU
finish() {
  for side in "${!PID[@]}"; do stop_process "${PID[$side]}"; done
  for tree in "$WORK"/trees/*; do
    [[ -d $tree ]] && git -C "$ROOT" worktree remove --force "$tree"
  done
  rm -rf "$WORK"
  databases drop "$DATABASE"
}
trap finish EXIT

start_mailroom() { # side, checkout, port, [VAR=value...]
  local side=$1 checkout=$2 port=$3
  shift 3
  (cd "$checkout" && exec env DATABASE_URL="$SERVER/$DATABASE" MAILROOM_ADMIN_TOKEN="$TOKEN" "$@" \
    "$PY" -m uvicorn service:app --host 127.0.0.1 --port "$port" --workers 1 \
    --loop uvloop --http httptools --no-access-log --log-level warning) >"$WORK/$side.log" 2>&1 &
  PID[$side]=$!
  PORT[$side]=$port
  wait_healthy "http://127.0.0.1:$port"
}

checkout() { # revision: a worktree of it, made once (the tree shares .venv's packages)
  local tree="$WORK/trees/$1"
  if [[ ! -d $tree ]]; then
    git -C "$ROOT" worktree add --quiet --detach "$tree" "$1"
  fi
  echo "$tree"
}

start_mailroom mailroom "$ROOT" 8211
if [[ -n ${BENCH_BASELINE:-} ]]; then
  start_mailroom baseline "$(checkout "$BENCH_BASELINE")" 8212
fi
VARIANTS=()
port=8220
for variant in ${BENCH_VARIANTS:-}; do
  port=$((port + 1))
  name=${variant%%:*}
  tree=$ROOT
  if [[ $name == *@* ]]; then
    tree=$(checkout "${name#*@}")
    name=${name%%@*}
  fi
  IFS=, read -r -a settings <<<"${variant#*:}"
  start_mailroom "$name" "$tree" "$port" "${settings[@]}"
  VARIANTS+=("$name")
done
# The ceiling's run.sh execs uvicorn, so its pid is the server's.
DATABASE_URL="$SERVER/$DATABASE" "$CEILING/run.sh" users_app 8213 >"$WORK/ceiling.log" 2>&1 &
PID[ceiling]=$!
PORT[ceiling]=8213
wait_healthy http://127.0.0.1:8213

SIDES=("${!PID[@]}")
args=(-t"${WRK_THREADS:-2}" -c"${WRK_CONNECTIONS:-64}" -H "Authorization: Bearer $TOKEN")
for round in $(seq 1 "$ROUNDS"); do
  for side in $(printf '%s\n' "${SIDES[@]}" | shuf); do
    url="http://127.0.0.1:${PORT[$side]}/users/1"
    measured=$(wrk_cpu "${PID[$side]}" "$DURATION" "$url" "${args[@]}")
    read -r rps micros <<<"$measured"
    echo "== round $round: $side $rps req/s, $micros us CPU per request" >&2
    RUNS[$side]="${RUNS[$side]:-} $rps"
    CPU[$side]="${CPU[$side]:-} $micros"
  done
done

base=$(echo "${RUNS[ceiling]}" | median)
cpu_base=$(echo "${CPU[ceiling]}" | median)
printf "%-10s %7s %10s %12s %12s\n" server "req/s" "of ceiling" "CPU us/req" "of ceiling"
for side in ceiling mailroom baseline "${VARIANTS[@]}"; do
  [[ -n ${RUNS[$side]:-} ]] || continue
  m=$(echo "${RUNS[$side]}" | median)
  c=$(echo "${CPU[$side]}" | median)
  printf "%-10s %7s %9.0f%% %12s %11.0f%%\n" "$side" "$m" "$(echo "100 * $m / $base" | bc -l)" \
    "$c" "$(echo "100 * $cpu_base / $c" | bc -l)"
done
