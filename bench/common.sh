# What the benchmark scripts share: `source "$HERE/common.sh"`.
#
# ROOT is the checkout, PY its environment's Python, SERVER the PostgreSQL server
# (BENCH_DATABASE_URL without a database, default the local one) that the scripts
# create their databases on.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"
SERVER=${BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432}
SERVER=${SERVER%/}

# Stop unless wrk is installed, then bring the checkout's environment up to date.
ready() {
  command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
  (cd "$ROOT" && uv sync --quiet --locked)
}

# A fresh admin key for a server the script starts (MAILROOM_ADMIN_TOKEN).
admin_token() { echo "bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }

# Wait until URL/health answers (60 s at most), or end the script.
wait_healthy() {
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "$1/health" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "no healthy server at $1" >&2
  exit 1
}

# End a server started in the background (by its pid, if any) and wait for it.
stop_process() {
  [[ -n $1 ]] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# The median of numbers separated by spaces or newlines, on standard input.
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# wrk_cpu PID SECONDS URL [wrk options...]: after a 1 s warm-up, wrk on URL for SECONDS;
# prints "<req/s> <server CPU us per request>" (user + system time of PID, from /proc).
# A run with any non-2xx answer ends the script: its rate would measure the errors.
wrk_cpu() {
  local pid=$1 seconds=$2 url=$3
  shift 3
  wrk "$@" -d1s "$url" >/dev/null
  local before out ticks rps requests
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(wrk "$@" -d"${seconds}s" "$url")
  ticks=$(($(awk '{print $14 + $15}' "/proc/$pid/stat") - before))
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$url answered errors:" >&2
    echo "$out" >&2
    exit 1
  fi
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps $(echo "$ticks * 1000000 / $(getconf CLK_TCK) / $requests" | bc)"
}

# databases create|drop NAME...: on the script's $SERVER (a PostgreSQL URL without
# a database), drop each database and, with create, make it anew and empty.
# Scripts call `databases drop` from their EXIT trap so that no run leaves one behind.
databases() {
  "$PY" - "$SERVER/postgres" "$@" <<'PY'
import sys, psycopg
from psycopg import sql
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    for name in sys.argv[3:]:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if sys.argv[2] == "create":
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
PY
}
